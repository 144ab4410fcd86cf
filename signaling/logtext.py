"""Values from the network in log lines: bounded and escaped.

A peer ID, a header or a path is chosen by whoever connects. Logged as is, it
could fill the log with megabytes, forge log lines with a newline, or
rewrite the terminal with ANSI escapes or a right-to-left override.
:func:`clip` makes any such value safe to put in a log line.
"""

from __future__ import annotations

#: characters of a value kept in a log line
LIMIT = 64


def clip(value: object, limit: int = LIMIT) -> str:
    """``value`` for a log line: its first ``limit`` characters, quoted and
    escaped as by ``repr`` (no control, format or separator character is left
    raw: newlines, ANSI escapes, U+202E...), then ``…(+N)`` if N were cut.

    Strings keep their characters (``clip("cam")`` is ``'cam'``, like
    ``%r``); bytes are shown as a bytes literal; anything else as its
    ``str()``.
    """
    if isinstance(value, bytes | bytearray):
        kept: str | bytes = bytes(value[:limit])
        cut = len(value) - limit
    else:
        if isinstance(value, str):
            text = value
        else:
            try:
                text = str(value)
            except Exception:  # (a broken __str__ must not break the log line)
                text = f"<{type(value).__name__}>"
        kept = text[:limit]
        cut = len(text) - limit
    shown = repr(kept)
    return f"{shown}…(+{cut})" if cut > 0 else shown
