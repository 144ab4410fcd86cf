"""Workarounds for aiortc bugs (not speed-ups: those are in :mod:`peers.tuning`).

Each wraps one aiortc method, only for the versions it was checked against
(:data:`VERIFIED`); with another version aiortc runs unchanged (logged at
INFO). :func:`apply` is idempotent and called by :mod:`peers.session`.

**Cancelling one of two concurrent ``RTCPeerConnection.close()`` breaks the
other** (aiortc 1.16). A second ``close()`` (ours, while aiortc's own close
task runs after the remote end closed DTLS, or two of ours) does ``await
self.__isClosed``, the future the first one resolves when done. Cancelling
the second (a task group shutting down, Ctrl-C) cancels that shared future,
so the first one's ``set_result(True)`` raises InvalidStateError: aiortc's
close task ends with "Task exception was never retrieved", logged whenever
the garbage collector gets to it. When that happens in the middle of
``ast.parse`` (e.g. pytest importing a module), the finalizer's Python code
upsets CPython 3.11's AST recursion bookkeeping and the import fails with
"SystemError: AST constructor recursion depth mismatch". The fix: the
second caller waits on the shared future through ``asyncio.shield``, so its
cancellation stays its own.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine
from importlib.metadata import version
from typing import Any

from aiortc import RTCPeerConnection

log = logging.getLogger(__name__)

#: aiortc versions whose RTCPeerConnection.close() the fix was checked against
VERIFIED = ("1.16.",)

_CLOSED_ATTR = "_RTCPeerConnection__isClosed"  # aiortc's private future (name-mangled)
_original_close: Callable[[RTCPeerConnection], Coroutine[Any, Any, None]] | None = None


async def _close(self: RTCPeerConnection) -> None:
    closing = getattr(self, _CLOSED_ATTR, None)
    if isinstance(closing, asyncio.Future):
        # shield: cancelling us must not cancel the future another close() resolves
        await asyncio.shield(closing)
        return
    assert _original_close is not None
    await _original_close(self)


def apply() -> bool:
    """Install the fix if this aiortc is one it was checked against; True if installed."""
    global _original_close
    if _original_close is not None:
        return True
    installed = version("aiortc")
    uses_future = _CLOSED_ATTR in RTCPeerConnection.close.__code__.co_names
    if not installed.startswith(VERIFIED) or not uses_future:
        log.info("aiortc %s: close() fix not applied (checked: %s)", installed, VERIFIED)
        return False
    _original_close = RTCPeerConnection.close
    RTCPeerConnection.close = functools.wraps(_original_close)(_close)  # type: ignore[method-assign]
    return True


def remove() -> None:
    """Undo :func:`apply` (for tests)."""
    global _original_close
    if _original_close is not None:
        RTCPeerConnection.close = _original_close  # type: ignore[method-assign,assignment]
        _original_close = None
