"""Property tests of proto: decoding never fails with anything but ProtocolError.

Each test is bounded (a few hundred examples, no deadline) so the whole file
runs in seconds.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtc_signal.proto import (
    Command,
    Envelope,
    InvalidBase64,
    ProtocolError,
    Request,
    Response,
    decode,
    decode_candidate,
    decode_description,
    decode_message,
    encode,
)
from rtc_signal.proto.envelope import INT64_MAX, INT64_MIN
from rtc_signal.proto.gojson import b64decode, go_string
from tests.helpers_golden import b64, golden_frames

SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FEW = settings(SETTINGS, max_examples=200)

GOLDEN_FRAMES = golden_frames()
REQUEST_COMMANDS = [c for c in Command if c.is_request]
RESPONSE_COMMANDS = [c for c in Command if not c.is_request]


def decode_or_protocol_error(frame: bytes | str) -> Envelope | ProtocolError:
    """decode(frame), returning the ProtocolError instead of raising it.

    Anything else (KeyError, TypeError, RecursionError, a pydantic error...)
    propagates and fails the test.
    """
    try:
        envelope = decode(frame)
    except ProtocolError as exc:
        assert exc.code == 400
        assert exc.command is None or isinstance(exc.command, Command)
        return exc
    assert isinstance(envelope, Envelope)
    # whatever decodes must re-encode to a frame that decodes to the same value
    again = decode(envelope.to_frame())
    assert again == envelope
    return envelope


# -- strategies ---------------------------------------------------------------------

# Text without lone surrogates (what can legally appear in a UTF-8 frame).
valid_text = st.text(st.characters(codec="utf-8"))
int64 = st.integers(min_value=INT64_MIN, max_value=INT64_MAX)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    valid_text,
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(valid_text, children, max_size=4)
    ),
    max_leaves=12,
)
command_values = st.one_of(
    st.sampled_from([int(c) for c in Command]),
    st.integers(min_value=-200, max_value=300),
    json_values,
)

requests = st.builds(
    Request,
    source=valid_text,
    target=valid_text,
    body=st.none() | st.binary(max_size=300),
)
responses = st.builds(Response, code=int64, msg=valid_text)


def request_objects() -> st.SearchStrategy[dict[str, Any]]:
    """Request-shaped JSON objects with any JSON type in any field."""
    return st.fixed_dictionaries(
        {},
        optional={
            "source": st.one_of(valid_text, json_values),
            "target": st.one_of(valid_text, json_values),
            "body": st.one_of(st.binary(max_size=40).map(b64), st.none(), json_values),
            "code": st.one_of(int64, json_values),
            "msg": st.one_of(valid_text, json_values),
            "extra": json_values,
        },
    )


# -- (1) arbitrary input ---------------------------------------------------------------


@SETTINGS
@given(st.binary(max_size=400))
def test_decode_arbitrary_bytes(frame: bytes) -> None:
    """decode(arbitrary bytes) returns an Envelope or raises ProtocolError, nothing else."""
    decode_or_protocol_error(frame)


@SETTINGS
@given(st.text(max_size=400))
def test_decode_arbitrary_text(frame: str) -> None:
    """decode(arbitrary str, lone surrogates included) returns an Envelope or ProtocolError."""
    decode_or_protocol_error(frame)


@SETTINGS
@given(json_values)
def test_decode_arbitrary_json(value: object) -> None:
    """decode of any JSON document (as bytes and as text) only raises ProtocolError."""
    text = json.dumps(value)
    decode_or_protocol_error(text)
    decode_or_protocol_error(text.encode())


@SETTINGS
@given(command=command_values, payload=st.one_of(json_values, st.binary(max_size=60).map(b64)))
def test_decode_frame_shaped_json(command: object, payload: object) -> None:
    """Frames {"command": any, "payload": any} only raise ProtocolError, with a sane command."""
    frame = json.dumps({"command": command, "payload": payload}).encode()
    result = decode_or_protocol_error(frame)
    if isinstance(result, ProtocolError) and result.command is not None:
        assert type(command) is int and int(result.command) == command


@SETTINGS
@given(
    command=st.sampled_from([int(c) for c in Command]),
    inner=st.one_of(request_objects(), json_values),
)
def test_decode_arbitrary_payload_json(command: int, inner: object) -> None:
    """A valid command with any JSON payload decodes or raises ProtocolError naming it."""
    frame = json.dumps({"command": command, "payload": b64(json.dumps(inner).encode())})
    result = decode_or_protocol_error(frame)
    if isinstance(result, ProtocolError):
        assert result.command is not None and int(result.command) == command


# -- (2) mutations of golden frames --------------------------------------------------------

golden = st.sampled_from(GOLDEN_FRAMES)


@SETTINGS
@given(frame=golden, data=st.data())
def test_golden_byte_mutations(frame: bytes, data: st.DataObject) -> None:
    """Byte flips, insertions, deletions and truncations of golden frames: only ProtocolError."""
    buf = bytearray(frame)
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        kind = data.draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        if not buf:
            break
        pos = data.draw(st.integers(0, len(buf) - 1), label="pos")
        if kind == "flip":
            buf[pos] ^= 1 << data.draw(st.integers(0, 7), label="bit")
        elif kind == "set":
            buf[pos] = data.draw(st.integers(0, 255), label="byte")
        elif kind == "insert":
            buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=8), label="ins")
        elif kind == "delete":
            del buf[pos : pos + data.draw(st.integers(1, 8), label="len")]
        else:
            del buf[pos:]
    decode_or_protocol_error(bytes(buf))
    try:
        text = bytes(buf).decode("utf-8")
    except UnicodeDecodeError:
        return
    decode_or_protocol_error(text)


@SETTINGS
@given(frame=golden, field=st.sampled_from(["command", "payload"]), value=json_values)
def test_golden_outer_value_replaced(frame: bytes, field: str, value: object) -> None:
    """Replacing command or payload with another JSON value raises only ProtocolError."""
    obj = json.loads(frame)
    obj[field] = value
    result = decode_or_protocol_error(json.dumps(obj))
    if field == "payload" and not isinstance(value, str):
        assert isinstance(result, ProtocolError)


@SETTINGS
@given(frame=golden, command=st.integers(min_value=-5, max_value=210))
def test_golden_command_changed(frame: bytes, command: int) -> None:
    """Changing the command number keeps decoding total; unknown numbers are refused."""
    obj = json.loads(frame)
    obj["command"] = command
    result = decode_or_protocol_error(json.dumps(obj))
    if command not in {int(c) for c in Command}:
        assert isinstance(result, ProtocolError) and result.command is None


@SETTINGS
@given(
    frame=golden,
    field=st.sampled_from(["source", "target", "body", "code", "msg", "new"]),
    value=st.one_of(json_values, st.just(None)),
    delete=st.booleans(),
)
def test_golden_inner_payload_mutated(
    frame: bytes, field: str, value: object, delete: bool
) -> None:
    """Re-encoding the inner payload with a replaced or deleted field raises only ProtocolError."""
    obj = json.loads(frame)
    inner = json.loads(base64.b64decode(obj["payload"]))
    if delete:
        inner.pop(field, None)
    else:
        inner[field] = value
    obj["payload"] = b64(json.dumps(inner).encode())
    decode_or_protocol_error(json.dumps(obj))


@SETTINGS
@given(frame=golden, inner=json_values)
def test_golden_inner_payload_replaced(frame: bytes, inner: object) -> None:
    """Replacing the whole inner payload with any JSON raises only ProtocolError."""
    obj = json.loads(frame)
    obj["payload"] = b64(json.dumps(inner).encode())
    decode_or_protocol_error(json.dumps(obj))


def _url_safe(text: str) -> str:
    return text.replace("+", "-").replace("/", "_")


@SETTINGS
@given(
    request=st.builds(
        Request,
        source=valid_text,
        target=valid_text,
        body=st.binary(min_size=1, max_size=60),
    ),
    command=st.sampled_from(REQUEST_COMMANDS),
    where=st.sampled_from(["outer", "body"]),
    how=st.sampled_from(["urlsafe", "unpad", "overpad"]),
)
def test_nonstandard_base64_rejected(
    request: Request, command: Command, where: str, how: str
) -> None:
    """Url-safe, unpadded or over-padded base64 in payload or body is always InvalidBase64."""
    assert request.body is not None
    standard = b64(request.body)

    def mutate(text: str) -> str:
        if how == "urlsafe":
            return _url_safe(text)
        if how == "unpad":
            return text.rstrip("=")
        return text + "="

    if where == "body":
        changed = mutate(standard)
        inner = json.dumps({"source": request.source, "target": request.target, "body": changed})
        frame = json.dumps({"command": int(command), "payload": b64(inner.encode())})
    else:
        changed = mutate(b64(request.to_json()))
        frame = json.dumps({"command": int(command), "payload": changed})
        standard = b64(request.to_json())
    result = decode_or_protocol_error(frame)
    if changed != standard:
        assert isinstance(result, InvalidBase64)
        assert result.command is command
    else:
        assert isinstance(result, Envelope)


@SETTINGS
@given(frame=golden, how=st.sampled_from(["urlsafe", "unpad", "overpad"]))
def test_golden_nonstandard_base64(frame: bytes, how: str) -> None:
    """Golden frames with a url-safe/unpadded/over-padded payload decode only if unchanged."""
    obj = json.loads(frame)
    original = obj["payload"]
    if how == "urlsafe":
        obj["payload"] = _url_safe(original)
    elif how == "unpad":
        obj["payload"] = original.rstrip("=")
    else:
        obj["payload"] = original + "=="
    result = decode_or_protocol_error(json.dumps(obj))
    if obj["payload"] == original:
        assert result == decode(frame)
    else:
        assert isinstance(result, InvalidBase64)


# Go's base64.StdEncoding accepts exactly this (we do not skip '\r' '\n' as Go does).
_GO_STD_B64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


@SETTINGS
@given(st.text(alphabet="AZaz09+/=-_ .\x00é", max_size=16))
def test_b64decode_accepts_exactly_go_std_encoding(text: str) -> None:
    """b64decode accepts a string iff Go's StdEncoding would (padding, alphabet)."""
    try:
        data = b64decode(text, "t")
    except InvalidBase64:
        assert _GO_STD_B64.fullmatch(text) is None
    else:
        assert _GO_STD_B64.fullmatch(text) is not None
        # canonical inputs round-trip; non-canonical trailing bits are accepted like Go
        assert base64.b64decode(text, validate=True) == data


# -- (3) round trips --------------------------------------------------------------------


@SETTINGS
@given(command=st.sampled_from(REQUEST_COMMANDS), request=requests)
def test_request_roundtrip(command: Command, request: Request) -> None:
    """decode(encode(cmd, request)) == request, and encode is deterministic."""
    frame = encode(command, request)
    assert frame == encode(command, request)
    envelope = decode(frame)
    assert envelope.command is command
    assert envelope.request == request
    assert decode(frame.decode("utf-8")).request == request  # as a text frame
    assert envelope.to_frame() == frame


@SETTINGS
@given(command=st.sampled_from(RESPONSE_COMMANDS), response=responses)
def test_response_roundtrip(command: Command, response: Response) -> None:
    """decode(encode(cmd, response)) == response for any int64 code and text."""
    frame = encode(command, response)
    assert frame == encode(command, response)
    envelope = decode(frame)
    assert envelope.command is command
    assert envelope.response == response
    assert envelope.to_frame() == frame


@SETTINGS
@given(request=requests)
def test_request_json_is_go_shaped(request: Request) -> None:
    """Request.to_json is compact JSON with Go's field order and standard base64 body."""
    raw = request.to_json()
    obj = json.loads(raw)
    assert list(obj) == ["source", "target", "body"]
    assert obj["source"] == request.source and obj["target"] == request.target
    if request.body is None:
        assert obj["body"] is None
    else:
        assert obj["body"] == base64.b64encode(request.body).decode()
    assert b'":' in raw and b'": ' not in raw[:12]


@SETTINGS
@given(valid_text)
def test_go_string_properties(value: str) -> None:
    """go_string is JSON for value, escapes <>& U+2028/9 and controls, keeps other text raw."""
    out = go_string(value)
    assert json.loads(out) == value
    body = out[1:-1]
    for ch in "<>&\u2028\u2029":
        assert ch not in body
    assert not any(ord(ch) < 0x20 for ch in body)
    # non-ASCII other than U+2028/9 is never \u-escaped
    for ch in value:
        if ord(ch) >= 0x80 and ch not in "\u2028\u2029":
            assert ch in body


@SETTINGS
@given(valid_text)
def test_go_string_matches_reference(value: str) -> None:
    """go_string equals an independent per-character model of Go's encodeState.string."""
    short = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
    short |= {"\b": "\\b", "\f": "\\f"}
    out = []
    for ch in value:
        if ch in short:
            out.append(short[ch])
        elif ord(ch) < 0x20 or ch in "<>&\u2028\u2029":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    assert go_string(value) == '"' + "".join(out) + '"'


# -- (4) bodies -------------------------------------------------------------------------


@SETTINGS
@given(st.one_of(st.none(), st.binary(max_size=300)))
def test_decode_candidate_total(body: bytes | None) -> None:
    """decode_candidate(arbitrary bytes) returns a line, None, or raises ProtocolError."""
    try:
        line = decode_candidate(body)
    except ProtocolError as exc:
        assert exc.command is Command.CANDIDATE
        return
    if line is not None:
        assert line.startswith("candidate:")
        assert line == line.strip()


@SETTINGS
@given(
    st.one_of(
        st.none(),
        st.binary(max_size=300),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.fixed_dictionaries(
            {"type": st.one_of(st.sampled_from(["offer", "answer", "x"]), json_values)},
            optional={"sdp": st.one_of(valid_text, json_values)},
        ).map(lambda v: json.dumps(v).encode()),
    ),
    st.sampled_from([(Command.OFFER, "offer"), (Command.ANSWER, "answer")]),
)
def test_decode_description_total(body: bytes | None, expect: tuple[Command, str]) -> None:
    """decode_description(arbitrary bytes) returns a description or raises ProtocolError."""
    command, kind = expect
    try:
        description = decode_description(body, command, kind)  # type: ignore[arg-type]
    except ProtocolError as exc:
        assert exc.command is command
        return
    assert description.type == kind
    assert decode_description(description.to_json(), command, kind) == description  # type: ignore[arg-type]


@FEW
@given(text=st.text(max_size=200))
def test_decode_message_text_total(text: str) -> None:
    """decode_message on any str (lone surrogates included) only raises ProtocolError."""
    with contextlib.suppress(ProtocolError):
        decode_message(text)


@pytest.mark.parametrize("frame", GOLDEN_FRAMES[:1])
def test_property_helper_can_fail(frame: bytes) -> None:
    """The helper used by these properties rejects non-ProtocolError exceptions (sanity check)."""
    with pytest.raises(Exception) as info:  # anything but ProtocolError
        decode_or_protocol_error(123)  # type: ignore[arg-type]
    assert not isinstance(info.value, ProtocolError)
    assert isinstance(decode_or_protocol_error(frame), Envelope)
