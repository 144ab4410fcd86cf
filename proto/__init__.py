"""rtc-signal's wire protocol: the Go demo's envelopes, byte-compatible.

Pure and synchronous: no I/O, no asyncio. Everything malformed raises a
:class:`ProtocolError` subclass and nothing else.

The names below are imported on first use (PEP 562), not with the package, so
that a module needing one of them (the router needs the envelope, not the
pydantic models of the bodies) pays only for its own.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

#: the distribution's version: its one source (pyproject.toml reads it), and
#: what `--version` prints without the ~30 ms of importlib.metadata
__version__ = "0.1.0"

if TYPE_CHECKING:
    from rtc_signal.proto.bodies import (
        SessionDescription,
        decode_candidate,
        decode_description,
        encode_candidate,
    )
    from rtc_signal.proto.commands import Command
    from rtc_signal.proto.envelope import (
        Envelope,
        Message,
        Request,
        Response,
        decode,
        decode_message,
        decode_payload,
        encode,
        encode_request,
        encode_response,
    )
    from rtc_signal.proto.errors import (
        InvalidBase64,
        InvalidPayload,
        MalformedFrame,
        ProtocolError,
        UnknownCommand,
    )
    from rtc_signal.proto.routing import RouteHeader, peek_request
    from rtc_signal.proto.wire import CANDIDATE_PREFIX

#: exported name -> the module that defines it
_EXPORTS = {
    "CANDIDATE_PREFIX": "wire",
    "SessionDescription": "bodies",
    "decode_candidate": "bodies",
    "decode_description": "bodies",
    "encode_candidate": "bodies",
    "Command": "commands",
    "Envelope": "envelope",
    "Message": "envelope",
    "Request": "envelope",
    "Response": "envelope",
    "decode": "envelope",
    "decode_message": "envelope",
    "decode_payload": "envelope",
    "encode": "envelope",
    "encode_request": "envelope",
    "encode_response": "envelope",
    "InvalidBase64": "errors",
    "InvalidPayload": "errors",
    "MalformedFrame": "errors",
    "ProtocolError": "errors",
    "UnknownCommand": "errors",
    "RouteHeader": "routing",
    "peek_request": "routing",
}
__all__ = [
    "CANDIDATE_PREFIX",
    "Command",
    "Envelope",
    "InvalidBase64",
    "InvalidPayload",
    "MalformedFrame",
    "Message",
    "ProtocolError",
    "Request",
    "Response",
    "RouteHeader",
    "SessionDescription",
    "UnknownCommand",
    "decode",
    "decode_candidate",
    "decode_description",
    "decode_message",
    "decode_payload",
    "encode",
    "encode_candidate",
    "encode_request",
    "encode_response",
    "peek_request",
]


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
