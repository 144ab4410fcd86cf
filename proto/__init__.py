"""rtc-signal's wire protocol: the Go demo's envelopes, byte-compatible.

Pure and synchronous: no I/O, no asyncio. Everything malformed raises a
:class:`ProtocolError` subclass and nothing else.
"""

from rtc_signal.proto.bodies import (
    CANDIDATE_PREFIX,
    SessionDescription,
    decode_candidate,
    decode_description,
    encode_candidate,
)
from rtc_signal.proto.envelope import (
    Command,
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
