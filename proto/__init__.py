"""rtc-signal's wire protocol: the Go demo's envelopes, byte-compatible.

Pure and synchronous: no I/O, no asyncio. Everything malformed raises a
:class:`ProtocolError` subclass and nothing else.
"""

from proto.bodies import (
    CANDIDATE_PREFIX,
    SessionDescription,
    decode_candidate,
    decode_description,
    encode_candidate,
)
from proto.envelope import (
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
from proto.errors import (
    InvalidBase64,
    InvalidPayload,
    MalformedFrame,
    ProtocolError,
    UnknownCommand,
)
from proto.routing import RouteHeader, peek_request

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
