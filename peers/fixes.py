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

**One malformed data-channel message kills the whole connection** (aiortc
1.16). ``RTCSctpTransport._data_channel_receive`` decodes a text message
(PPID 51) with a strict ``data.decode("utf8")``, decodes a DCEP OPEN's label
and protocol the same way, and checks with ``assert`` that an OPEN is for a
new stream and an ACK for a known one. Any of these raising (UnicodeDecodeError,
AssertionError) ends aiortc's DTLS receive loop: every data channel and the
media of the connection die, logged only as a WARNING traceback, and any
remote peer can do it with one message. The fix checks those conditions
before calling aiortc's method: invalid UTF-8 text is delivered decoded with
U+FFFD replacements (as browsers' TextDecoder does; logged at WARNING once
per channel, with its length and first bad offset), and such an OPEN or ACK
is dropped (logged at WARNING once per connection and kind, later ones at
DEBUG). Everything else goes to aiortc's method unchanged.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import struct
import weakref
from collections.abc import Callable, Coroutine
from importlib.metadata import version
from typing import Any

from aiortc import RTCDataChannel, RTCPeerConnection
from aiortc.rtcsctptransport import (
    DATA_CHANNEL_ACK,
    DATA_CHANNEL_OPEN,
    WEBRTC_DCEP,
    WEBRTC_STRING,
    RTCSctpTransport,
)

log = logging.getLogger(__name__)

#: aiortc versions whose methods (close(), _data_channel_receive()) the fixes were checked against
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


def _apply_close() -> bool:
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


_Receive = Callable[[RTCSctpTransport, int, int, bytes], Coroutine[Any, Any, None]]
_original_receive: _Receive | None = None
_DCEP_OPEN_HEADER = struct.Struct("!BBHLHH")  # type, channel type, priority, reliability, lengths
#: channels whose invalid text was logged at WARNING already (later: DEBUG)
_warned_channels: weakref.WeakSet[RTCDataChannel] = weakref.WeakSet()
#: per SCTP transport, the kinds of dropped DCEP messages logged at WARNING already
_warned_dcep: weakref.WeakKeyDictionary[RTCSctpTransport, set[str]] = weakref.WeakKeyDictionary()


def _first_bad_offset(data: bytes) -> int | None:
    """Offset of the first byte that is not valid UTF-8 (None: all valid)."""
    if data.isascii():
        return None
    try:
        data.decode("utf8")
    except UnicodeDecodeError as exc:
        return exc.start
    return None


def _drop_dcep(transport: RTCSctpTransport, kind: str, stream_id: int, detail: str = "") -> None:
    warned = _warned_dcep.setdefault(transport, set())
    level = logging.DEBUG if kind in warned else logging.WARNING
    warned.add(kind)
    log.log(
        level, "data channel stream %d: dropped %s from the remote peer%s", stream_id, kind, detail
    )


def _bad_dcep(transport: RTCSctpTransport, stream_id: int, data: bytes) -> bool:
    """Drop (log, return True) a DCEP message aiortc's method would raise on."""
    msg_type = data[0]
    if msg_type == DATA_CHANNEL_ACK and stream_id not in transport._data_channels:
        _drop_dcep(transport, "a DCEP ACK for an unknown stream", stream_id)
        return True
    if msg_type != DATA_CHANNEL_OPEN or len(data) < _DCEP_OPEN_HEADER.size:
        return False  # aiortc ignores short OPENs and unknown types itself
    if stream_id in transport._data_channels:
        _drop_dcep(transport, "a DCEP OPEN for an existing stream", stream_id)
        return True
    *_, label_length, protocol_length = _DCEP_OPEN_HEADER.unpack_from(data)
    pos = _DCEP_OPEN_HEADER.size
    for name, length in (("label", label_length), ("protocol", protocol_length)):
        field = data[pos : pos + length]
        bad = _first_bad_offset(field)
        if bad is not None:
            detail = f" ({name} of {len(field)} bytes, first invalid UTF-8 at offset {bad})"
            _drop_dcep(
                transport, "a DCEP OPEN with a non-UTF-8 label or protocol", stream_id, detail
            )
            return True
        pos += length
    return False


def _sanitized_text(transport: RTCSctpTransport, stream_id: int, data: bytes) -> bytes:
    """``data`` if valid UTF-8, else re-encoded with U+FFFD for each bad sequence."""
    bad = _first_bad_offset(data)
    if bad is None:
        return data
    channel = transport._data_channels[stream_id]
    level = logging.DEBUG if channel in _warned_channels else logging.WARNING
    _warned_channels.add(channel)
    label = channel.label if len(channel.label) <= 40 else channel.label[:40] + "..."
    log.log(
        level,
        "data channel %r (stream %d): text message of %d bytes is not valid UTF-8 "
        "(first bad byte at offset %d), delivered with U+FFFD replacements%s",
        label,
        stream_id,
        len(data),
        bad,
        "" if level == logging.DEBUG else " (later ones on this channel: DEBUG)",
    )
    return data.decode("utf8", errors="replace").encode("utf8")


async def _data_channel_receive(
    self: RTCSctpTransport, stream_id: int, pp_id: int, data: bytes
) -> None:
    if pp_id == WEBRTC_DCEP and len(data) and _bad_dcep(self, stream_id, data):
        return
    if pp_id == WEBRTC_STRING and stream_id in self._data_channels:
        data = _sanitized_text(self, stream_id, data)
    assert _original_receive is not None
    await _original_receive(self, stream_id, pp_id, data)


def _apply_receive() -> bool:
    global _original_receive
    if _original_receive is not None:
        return True
    installed = version("aiortc")
    method = getattr(RTCSctpTransport, "_data_channel_receive", None)
    names = getattr(getattr(method, "__code__", None), "co_names", ())
    if not installed.startswith(VERIFIED) or not {"decode", "_data_channels"} <= set(names):
        log.info(
            "aiortc %s: data-channel receive fix not applied (checked: %s)", installed, VERIFIED
        )
        return False
    _original_receive = RTCSctpTransport._data_channel_receive
    RTCSctpTransport._data_channel_receive = functools.wraps(_original_receive)(  # type: ignore[method-assign]
        _data_channel_receive
    )
    return True


def apply() -> bool:
    """Install the fixes if this aiortc is one they were checked against; True if all are."""
    return all([_apply_close(), _apply_receive()])  # a list: try each one


def remove() -> None:
    """Undo :func:`apply` (for tests)."""
    global _original_close, _original_receive
    if _original_close is not None:
        RTCPeerConnection.close = _original_close  # type: ignore[method-assign,assignment]
        _original_close = None
    if _original_receive is not None:
        RTCSctpTransport._data_channel_receive = _original_receive  # type: ignore[method-assign,assignment]
        _original_receive = None
