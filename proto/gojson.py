"""JSON strings and base64 exactly as Go's ``encoding/json`` writes them.

Byte compatibility with the Go demo means our frames must be the bytes Go
would produce for the same values: compact separators, field order as in the
Go structs, ``[]byte`` as standard padded base64, and Go's string escaping
(HTML-safe ``<``, ``>``, ``&`` and the JavaScript line separators escaped,
other non-ASCII kept as UTF-8).
"""

from __future__ import annotations

import binascii
import json

from rtc_signal.proto.errors import InvalidBase64

# Go escapes these even though JSON does not require it (HTMLEscape and the
# JSONP-safety of U+2028/U+2029); Python's json.dumps leaves them alone.
_GO_EXTRA_ESCAPES = {
    ord("<"): "\\u003c",
    ord(">"): "\\u003e",
    ord("&"): "\\u0026",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}


def go_string(value: str) -> str:
    """Return ``value`` as a JSON string literal, escaped as Go escapes it."""
    # json.dumps(ensure_ascii=False) already matches Go (>= 1.22) for quotes,
    # backslashes, \b \f \n \r \t and \u00XX control characters.
    return json.dumps(value, ensure_ascii=False).translate(_GO_EXTRA_ESCAPES)


def b64encode(data: bytes) -> str:
    """Standard base64 with padding (alphabet ``+/``), as Go encodes ``[]byte``."""
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def b64decode(text: str, what: str) -> bytes:
    """Decode standard padded base64; reject URL-safe, unpadded or stray input."""
    try:
        data = binascii.a2b_base64(text.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise InvalidBase64(f"{what} is not standard padded base64: {exc}") from None
    # strict_mode still ignores excess padding ("Zm9v=", "Zg==="), which Go
    # rejects: the text must be exactly as long as the padded encoding.
    if len(text) != 4 * ((len(data) + 2) // 3):
        raise InvalidBase64(f"{what} is not standard padded base64: excess padding")
    return data


def reject_json_constant(name: str) -> None:
    """``parse_constant`` hook: NaN and Infinity are not JSON."""
    raise ValueError(f"{name} is not JSON")
