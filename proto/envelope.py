"""The signaling envelopes: Message, Request and Response (pydantic models).

Wire format (see ``docs`` in the README)::

    Message  = {"command": <int>, "payload": <base64 of JSON bytes>}
    Request  = {"source": <str>, "target": <str>, "body": <base64 or null>}
    Response = {"code": <int>, "msg": <str>}

Decoding validates everything and raises only :class:`~proto.errors.ProtocolError`
subclasses. Encoding writes the bytes Go's ``encoding/json`` writes, so frames
round-trip byte for byte with the Go reference demo.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationInfo

from rtc_signal.proto.commands import Command
from rtc_signal.proto.errors import InvalidPayload, MalformedFrame, ProtocolError, UnknownCommand
from rtc_signal.proto.gojson import b64decode, reject_json_constant
from rtc_signal.proto.wire import message_frame, request_json, response_json

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


# The validators below read the wire strictly (validation context WIRE), and
# accept already typed values when models are built in Python.
WIRE = {"wire": True}


def _from_wire(info: ValidationInfo) -> bool:
    return info.context is WIRE


_COMMAND_VALUES = frozenset(int(c) for c in Command)


def _payload_bytes(value: object, info: ValidationInfo) -> bytes:
    if not _from_wire(info) and isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        raise ValueError("payload must be a base64 string")
    return b64decode(value, "payload")


def _body_bytes(value: object, info: ValidationInfo) -> bytes | None:
    if value is None:  # Go's nil []byte
        return None
    if not _from_wire(info) and isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        raise ValueError("body must be a base64 string or null")
    return b64decode(value, "body")


def _command(value: object) -> Command:
    if isinstance(value, Command):
        return value
    if type(value) is not int:
        raise ValueError("command must be an integer")
    try:
        return Command(value)
    except ValueError:
        raise UnknownCommand(f"unknown command {value}") from None


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    try:
        value.encode("utf-8")  # rejects lone surrogates such as "\ud800"
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no lone surrogates)") from None
    return value


def _int64(value: object) -> int:
    if type(value) is not int or not INT64_MIN <= value <= INT64_MAX:
        raise ValueError("must be a 64-bit integer")
    return value


Text = Annotated[str, PlainValidator(_text)]
_FROZEN = ConfigDict(frozen=True, extra="ignore")


class Request(BaseModel):
    """A request payload (commands 1-4). Missing fields default as in Go."""

    model_config = _FROZEN

    source: Text = ""
    target: Text = ""
    body: Annotated[bytes | None, PlainValidator(_body_bytes)] = None

    def to_json(self) -> bytes:
        return request_json(self.source, self.target, self.body)


class Response(BaseModel):
    """A response payload (commands 100-104). Code 0 means success."""

    model_config = _FROZEN

    code: Annotated[int, PlainValidator(_int64)] = 0
    msg: Text = ""

    @property
    def ok(self) -> bool:
        return self.code == 0

    def to_json(self) -> bytes:
        return response_json(self.code, self.msg)


class Message(BaseModel):
    """The outer frame: a command and the raw (already base64-decoded) payload."""

    model_config = _FROZEN

    command: Annotated[Command, PlainValidator(_command)]
    payload: Annotated[bytes, PlainValidator(_payload_bytes)]

    def to_frame(self) -> bytes:
        return message_frame(self.command, self.payload)


class Envelope(BaseModel):
    """A decoded frame: its command and its typed payload."""

    model_config = _FROZEN

    command: Command
    content: Request | Response = Field(union_mode="left_to_right")

    @property
    def request(self) -> Request:
        """The payload of a request frame (raises ProtocolError on a response)."""
        if not isinstance(self.content, Request):
            raise InvalidPayload(f"command {self.command} carries no Request", self.command)
        return self.content

    @property
    def response(self) -> Response:
        """The payload of a response frame (raises ProtocolError on a request)."""
        if not isinstance(self.content, Response):
            raise InvalidPayload(f"command {self.command} carries no Response", self.command)
        return self.content

    def to_frame(self) -> bytes:
        return Message(command=self.command, payload=self.content.to_json()).to_frame()


def _first_error(exc: pydantic.ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in err["loc"]) or "frame"
    return f"{where}: {err['msg']}"


def validate_json(model: type[Any], data: bytes, what: str, command: Command | None) -> Any:
    """Validate JSON ``data`` as ``model``, mapping every failure into ProtocolError."""
    cls = MalformedFrame if command is None else InvalidPayload
    try:
        # Decode UTF-8 ourselves: json.loads(bytes) would also guess UTF-16/32.
        obj = json.loads(data.decode("utf-8"), parse_constant=reject_json_constant)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise cls(f"{what} is not JSON: {exc}", command) from None
    if not isinstance(obj, dict):
        raise cls(f"{what} is not a JSON object", command)
    if command is None:  # the outer frame: learn its command early for the reply
        raw = obj.get("command")
        if type(raw) is int and raw in _COMMAND_VALUES:
            command = Command(raw)
    try:
        return model.model_validate(obj, strict=True, context=WIRE)
    except pydantic.ValidationError as exc:
        # A ProtocolError raised inside a validator arrives wrapped; unwrap it.
        for err in exc.errors(include_url=False):
            inner = (err.get("ctx") or {}).get("error")
            if isinstance(inner, ProtocolError):
                inner.command = inner.command or command
                raise inner from None
        raise cls(f"bad {what}: {_first_error(exc)}", command) from None


def decode_message(frame: bytes | str) -> Message:
    """Decode the outer Message of a frame (text or binary)."""
    if isinstance(frame, str):
        try:
            frame = frame.encode("utf-8")
        except UnicodeEncodeError:
            raise MalformedFrame("frame is not valid UTF-8") from None
    message: Message = validate_json(Message, frame, "frame", None)
    return message


def decode_payload(command: Command, payload: bytes) -> Request | Response:
    """Decode a Message payload as the Request or Response its command implies."""
    if command.is_request:
        request: Request = validate_json(Request, payload, "request payload", command)
        return request
    response: Response = validate_json(Response, payload, "response payload", command)
    return response


def decode(frame: bytes | str) -> Envelope:
    """Decode a whole frame; raises :class:`ProtocolError` on anything malformed."""
    message = decode_message(frame)
    content = decode_payload(message.command, message.payload)
    return Envelope.model_construct(command=message.command, content=content)


def encode(command: Command, content: Request | Response) -> bytes:
    """Encode a frame exactly as the Go demo would."""
    return Message(command=command, payload=content.to_json()).to_frame()


def encode_request(command: Command, source: str, target: str, body: bytes | None = None) -> bytes:
    return encode(command, Request(source=source, target=target, body=body))


def encode_response(command: Command, code: int, msg: str) -> bytes:
    return encode(command, Response(code=code, msg=msg))
