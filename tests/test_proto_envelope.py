"""Unit tests of proto.envelope / proto.gojson: Go byte compatibility and strict decoding."""

from __future__ import annotations

import base64
import json

import pydantic
import pytest

from rtc_signal.proto import (
    Command,
    Envelope,
    InvalidBase64,
    InvalidPayload,
    MalformedFrame,
    Message,
    ProtocolError,
    Request,
    Response,
    UnknownCommand,
    decode,
    decode_message,
    decode_payload,
    encode,
    encode_request,
    encode_response,
)
from rtc_signal.proto.gojson import b64decode, b64encode, go_string
from tests.helpers_golden import (
    b64,
    frame_with_payload_json,
    golden_frames,
    load_golden,
    raw_frame,
)

GOLDEN = load_golden()
GOLDEN_FRAMES = golden_frames()

INIT_FRAME = GOLDEN[0].frame  # {"command":1,...,"body":null}
OK_PAYLOAD = b'{"code":0,"msg":"ok"}'

# Bytes whose standard base64 uses '+' and '/' (and whose url-safe form differs).
PLUS_SLASH = bytes.fromhex("fbffbf")  # "+/+/"
ALL_PLUS = bytes.fromhex("fbefbe")  # "++++"
ALL_SLASH = bytes.fromhex("ffffff")  # "////"


# -- golden frames -------------------------------------------------------------


def test_golden_file_has_every_command() -> None:
    """The golden session covers commands 1-4 and 101-104 (so the suite tests them all)."""
    assert {g.command for g in GOLDEN} == {1, 2, 3, 4, 101, 102, 103, 104}
    assert all(g.binary for g in GOLDEN)


@pytest.mark.parametrize("frame", GOLDEN_FRAMES, ids=lambda f: f[:40].decode())
def test_golden_frame_reencodes_identically(frame: bytes) -> None:
    """Every golden frame decodes and Envelope.to_frame() gives the same bytes."""
    envelope = decode(frame)
    assert envelope.to_frame() == frame


@pytest.mark.parametrize("frame", GOLDEN_FRAMES, ids=lambda f: f[:40].decode())
def test_golden_frame_encode_function_identical(frame: bytes) -> None:
    """encode(command, content) of a decoded golden frame reproduces its bytes."""
    envelope = decode(frame)
    assert encode(envelope.command, envelope.content) == frame


@pytest.mark.parametrize("frame", GOLDEN_FRAMES, ids=lambda f: f[:40].decode())
def test_golden_message_level_roundtrip(frame: bytes) -> None:
    """decode_message keeps the raw payload bytes and Message.to_frame() restores the frame."""
    message = decode_message(frame)
    assert message.payload == base64.b64decode(json.loads(frame)["payload"])
    assert message.to_frame() == frame


@pytest.mark.parametrize("frame", GOLDEN_FRAMES, ids=lambda f: f[:40].decode())
def test_golden_frame_as_text_decodes_equal(frame: bytes) -> None:
    """A text (str) frame decodes to the same Envelope as the binary frame."""
    assert decode(frame.decode("utf-8")) == decode(frame)


def test_golden_payload_kinds() -> None:
    """Golden requests decode to Request, responses to Response, with the recorded values."""
    for g in GOLDEN:
        envelope = decode(g.frame)
        assert int(envelope.command) == g.command
        payload = g.payload_json
        if g.command < 100:
            request = envelope.request
            assert request.source == payload["source"]
            assert request.target == payload["target"]
            if payload["body"] is None:
                assert request.body is None
            else:
                assert request.body == base64.b64decode(payload["body"])
        else:
            response = envelope.response
            assert (response.code, response.msg) == (payload["code"], payload["msg"])
            assert response.ok is (payload["code"] == 0)


def test_golden_unknown_target_reply_bytes() -> None:
    """encode_response reproduces the Go server's 103 {code 1, 'file does not exist'} frame."""
    last = GOLDEN[-1]
    assert encode_response(Command.OFFER_RESPONSE, 1, "file does not exist") == last.frame


def test_golden_ok_reply_bytes() -> None:
    """encode_response(101, 0, 'ok') is byte-identical to the Go server's ack."""
    assert encode_response(Command.INIT_RESPONSE, 0, "ok") == GOLDEN[1].frame


# -- base64 ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", ""),
        (b"f", "Zg=="),
        (b"fo", "Zm8="),
        (b"foo", "Zm9v"),
        (PLUS_SLASH, "+/+/"),
        (ALL_PLUS, "++++"),
        (ALL_SLASH, "////"),
        (bytes.fromhex("fbff"), "+/8="),
        (bytes.fromhex("ff"), "/w=="),
    ],
)
def test_b64encode_standard_padded(data: bytes, expected: str) -> None:
    """b64encode emits RFC 4648 §4 base64: '+/' alphabet, always '=' padded."""
    assert b64encode(data) == expected == base64.b64encode(data).decode()


def test_body_base64_uses_plus_slash_and_padding() -> None:
    """A Request body is emitted with '+' and '/' (never '-' '_') and with padding."""
    payload = Request(source="s", target="t", body=PLUS_SLASH + b"\xff").to_json()
    assert payload == b'{"source":"s","target":"t","body":"+/+//w=="}'


def test_outer_payload_base64_uses_plus_slash() -> None:
    """The outer payload is standard base64 too: this payload's encoding contains '+' and '/'."""
    request = Request(source=">>>???", target="~~~", body=PLUS_SLASH)
    inner = b'{"source":"\\u003e\\u003e\\u003e???","target":"~~~","body":"+/+/"}'
    assert request.to_json() == inner
    frame = encode(Command.OFFER, request)
    payload = json.loads(frame)["payload"]
    assert "+" in payload and "/" in payload
    assert "-" not in payload and "_" not in payload
    assert frame == b'{"command":3,"payload":"' + b64(inner).encode() + b'"}'


@pytest.mark.parametrize("size", range(0, 7))
def test_message_payload_always_padded(size: int) -> None:
    """Message.to_frame() pads every payload length to a multiple of 4 with '='."""
    payload = bytes([0xFB]) * size
    frame = Message(command=Command.INIT, payload=payload).to_frame()
    text = json.loads(frame)["payload"]
    assert len(text) % 4 == 0
    assert text == base64.b64encode(payload).decode()
    assert "-" not in text and "_" not in text


def _url_safe(text: str) -> str:
    return text.replace("+", "-").replace("/", "_")


def test_url_safe_outer_payload_rejected() -> None:
    """A url-safe ('-', '_') outer payload raises InvalidBase64, with the command set."""
    frame = encode(Command.OFFER, Request(source=">>>???", target="~~~", body=PLUS_SLASH))
    obj = json.loads(frame)
    bad = raw_frame(3, _url_safe(obj["payload"]))
    assert bad != frame
    with pytest.raises(InvalidBase64) as info:
        decode(bad)
    assert info.value.command is Command.OFFER


def test_url_safe_body_rejected() -> None:
    """A url-safe body ('-_-_') raises InvalidBase64, with the request's command."""
    bad = frame_with_payload_json(4, {"source": "a", "target": "b", "body": "-_-_"})
    with pytest.raises(InvalidBase64) as info:
        decode(bad)
    assert info.value.command is Command.CANDIDATE


@pytest.mark.parametrize("frame", [g.frame for g in GOLDEN if b"=" in g.frame])
def test_unpadded_outer_payload_rejected(frame: bytes) -> None:
    """Removing the '=' padding of a golden payload makes it InvalidBase64 (Go rejects it)."""
    obj = json.loads(frame)
    bad = raw_frame(obj["command"], obj["payload"].rstrip("="))
    with pytest.raises(InvalidBase64) as info:
        decode(bad)
    assert info.value.command == obj["command"]


@pytest.mark.parametrize("frame", [g.frame for g in GOLDEN], ids=lambda f: f[:40].decode())
def test_excess_padding_outer_payload_rejected(frame: bytes) -> None:
    """An extra '=' after a golden payload is InvalidBase64 (Go: 'illegal base64 data')."""
    obj = json.loads(frame)
    bad = raw_frame(obj["command"], obj["payload"] + "=")
    with pytest.raises(InvalidBase64) as info:
        decode(bad)
    assert info.value.command == obj["command"]


def test_excess_padding_body_rejected() -> None:
    """A body with padding after a full quantum ('Zm9v=') is rejected, as Go rejects it."""
    bad = frame_with_payload_json(4, {"source": "a", "target": "b", "body": "Zm9v="})
    with pytest.raises(InvalidBase64):
        decode(bad)


def test_unpadded_body_rejected() -> None:
    """An unpadded body ('Zg' for b'f') is rejected with InvalidBase64."""
    bad = frame_with_payload_json(2, {"source": "a", "target": "b", "body": "Zg"})
    with pytest.raises(InvalidBase64):
        decode(bad)


@pytest.mark.parametrize(
    "text",
    [
        *("Zg", "Zg=", "Z===", "Zm9", "Zm 9v", "Zm9v\n", " Zm9v", "Zm9v!", "Zm=9v", "é===", "="),
        # excess padding: Python's strict a2b_base64 accepts these, Go rejects them
        *("Zm9v=", "Zm9v==", "Zm9v====", "Zg===", "Zg====", "Zm8==", "Zm9vYg==="),
    ],
)
def test_b64decode_rejects_nonstandard(text: str) -> None:
    """b64decode rejects bad padding, whitespace, stray and non-ASCII characters."""
    with pytest.raises(InvalidBase64):
        b64decode(text, "test")


def test_b64decode_accepts_standard() -> None:
    """b64decode accepts standard padded base64, including '+' and '/'."""
    assert b64decode("+/+/", "t") == PLUS_SLASH
    assert b64decode("Zg==", "t") == b"f"
    assert b64decode("", "t") == b""


# -- body null / defaults / unknown fields ------------------------------------------


def test_body_null_accepted_and_reencoded_as_null() -> None:
    """body: null decodes to None and is written back as JSON null (Go's nil []byte)."""
    envelope = decode(INIT_FRAME)
    assert envelope.request.body is None
    assert b'"body":null' in envelope.request.to_json()
    assert envelope.to_frame() == INIT_FRAME


def test_empty_body_distinct_from_null() -> None:
    """body "" decodes to b'' and re-encodes as "" (Go's empty non-nil slice), not null."""
    frame = frame_with_payload_json(4, {"source": "a", "target": "b", "body": ""})
    request = decode(frame).request
    assert request.body == b""
    assert request.to_json() == b'{"source":"a","target":"b","body":""}'


def test_missing_request_fields_default_like_go() -> None:
    """An empty Request object decodes to source "", target "", body nil (Go zero values)."""
    envelope = decode(raw_frame(3, b64(b"{}")))
    assert envelope.request == Request(source="", target="", body=None)
    assert envelope.request.to_json() == b'{"source":"","target":"","body":null}'


def test_missing_response_fields_default_like_go() -> None:
    """An empty Response object decodes to code 0, msg "" (Go zero values)."""
    envelope = decode(raw_frame(104, b64(b"{}")))
    assert envelope.response == Response(code=0, msg="")
    assert envelope.response.to_json() == b'{"code":0,"msg":""}'


def test_partial_request_fields_default() -> None:
    """Only the missing fields take their defaults; present ones are kept."""
    envelope = decode(raw_frame(1, b64(b'{"source":"me"}')))
    assert envelope.request == Request(source="me")


def test_missing_payload_is_malformed_with_command() -> None:
    """A frame without payload is rejected, naming the command it could read."""
    with pytest.raises(MalformedFrame) as info:
        decode(b'{"command":2}')
    assert info.value.command is Command.ANSWER


def test_missing_command_is_malformed_without_command() -> None:
    """A frame without command is rejected with command None."""
    with pytest.raises(MalformedFrame) as info:
        decode(b'{"payload":"e30="}')
    assert info.value.command is None


def test_unknown_outer_fields_ignored() -> None:
    """Unknown fields of the outer Message are ignored."""
    obj = json.loads(INIT_FRAME)
    obj["extra"] = {"nested": [1, 2, None]}
    obj["Command2"] = "x"
    assert decode(json.dumps(obj).encode()) == decode(INIT_FRAME)


def test_unknown_inner_fields_ignored() -> None:
    """Unknown fields of Request and Response payloads are ignored."""
    req = frame_with_payload_json(3, {"source": "o", "x": [1, {"y": None}], "target": "a"})
    assert decode(req).request == Request(source="o", target="a")
    resp = frame_with_payload_json(101, {"code": 409, "extra": 1.5, "msg": "taken"})
    assert decode(resp).response == Response(code=409, msg="taken")


def test_whitespace_and_key_order_accepted() -> None:
    """Non-compact JSON with another key order decodes like the compact frame."""
    obj = json.loads(GOLDEN[1].frame)
    pretty = json.dumps({"payload": obj["payload"], "command": obj["command"]}, indent=2)
    assert decode(pretty.encode()) == decode(GOLDEN[1].frame)


def test_escaped_characters_in_payload_string_accepted() -> None:
    """A payload string using JSON escapes (\\u0065 for 'e') decodes like the plain one."""
    obj = json.loads(GOLDEN[1].frame)
    payload = obj["payload"]
    escaped = f"\\u{ord(payload[0]):04x}" + payload[1:]
    frame = b'{"command":101,"payload":"' + escaped.encode() + b'"}'
    assert decode(frame) == decode(GOLDEN[1].frame)


# -- Go string escaping ---------------------------------------------------------------
# Expected outputs follow Go's encoding/json (Go >= 1.22): HTML-safe escaping of
# < > & as \u003c \u003e \u0026, U+2028/U+2029 escaped, \b \f \n \r \t short forms,
# other control characters as lowercase \u00XX, DEL and non-ASCII kept raw (UTF-8).

GO_STRINGS = [
    ("", '""'),
    ("ok", '"ok"'),
    ("<script>&</script>", '"\\u003cscript\\u003e\\u0026\\u003c/script\\u003e"'),
    ("a\u2028b\u2029c", '"a\\u2028b\\u2029c"'),
    ("é日本🎉", '"é日本🎉"'),
    ('quote " backslash \\', '"quote \\" backslash \\\\"'),
    ("\n\r\t\b\f", '"\\n\\r\\t\\b\\f"'),
    ("\x00\x01\x1f", '"\\u0000\\u0001\\u001f"'),
    ("\x7f", '"\x7f"'),
    ("/", '"/"'),
    ("\u2027\u202a", '"\u2027\u202a"'),
    ("v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\n", '"v=0\\r\\no=- 1 2 IN IP4 0.0.0.0\\r\\n"'),
]


@pytest.mark.parametrize(("value", "go"), GO_STRINGS)
def test_go_string_matches_go(value: str, go: str) -> None:
    """go_string escapes exactly like Go's encoding/json."""
    assert go_string(value) == go
    assert json.loads(go) == value


def test_request_json_go_escaping() -> None:
    """Request.to_json writes Go's bytes: HTML escapes, U+2028 escaped, UTF-8 kept."""
    request = Request(source="<a&b>", target="é\u2028🎉", body=None)
    assert request.to_json() == (
        b'{"source":"\\u003ca\\u0026b\\u003e","target":"'
        + "é".encode()
        + b"\\u2028"
        + "🎉".encode()
        + b'","body":null}'
    )


def test_response_json_go_escaping() -> None:
    """Response.to_json writes Go's bytes for code and an escaped msg."""
    response = Response(code=-404, msg="no <peer> & \u2029 ü")
    assert response.to_json() == (
        b'{"code":-404,"msg":"no \\u003cpeer\\u003e \\u0026 \\u2029 ' + "ü".encode() + b'"}'
    )


def test_escaped_input_decodes_and_reencodes_go_style() -> None:
    """Non-canonical escapes in input decode to the same text, re-encoded the Go way."""
    inner = b'{"source":"\\u0061\\u003c\\u00e9","target":"<","body":null}'
    envelope = decode(raw_frame(1, b64(inner)))
    assert envelope.request.source == "a<é"
    assert envelope.request.to_json() == (
        b'{"source":"a\\u003c' + "é".encode() + b'","target":"\\u003c","body":null}'
    )


def test_non_ascii_payload_kept_utf8() -> None:
    """Non-ASCII text in a payload is kept as raw UTF-8 inside the base64 payload."""
    frame = encode_request(Command.OFFER, "pär", "日本")
    inner = base64.b64decode(json.loads(frame)["payload"])
    assert inner == '{"source":"pär","target":"日本","body":null}'.encode()


# -- command and value typing ------------------------------------------------------------


@pytest.mark.parametrize("command", ["1", 1.0, 3.5, True, False, None, [1], {"c": 1}, 1e0])
def test_non_integer_command_rejected(command: object) -> None:
    """A command that is not a JSON integer (string, float, bool, null, ...) is MalformedFrame."""
    with pytest.raises(MalformedFrame) as info:
        decode(raw_frame(command, b64(OK_PAYLOAD)))
    assert info.value.command is None


def test_float_literal_command_rejected() -> None:
    """'1.0' and '1e0' command literals are floats in Go too, and rejected."""
    for literal in (b"1.0", b"1e0", b"10E-1"):
        with pytest.raises(MalformedFrame):
            decode(b'{"command":' + literal + b',"payload":"e30="}')


@pytest.mark.parametrize("command", [0, 8, 99, 108, 200, -1, -101, 2**63, 2**70])
def test_unknown_command_rejected(command: int) -> None:
    """An integer command outside 1-7, 100-107 is UnknownCommand with command None."""
    with pytest.raises(UnknownCommand) as info:
        decode(raw_frame(command, b64(OK_PAYLOAD)))
    assert info.value.command is None
    assert info.value.code == 400


def test_error_command_100_decodes_as_response() -> None:
    """Command 100 (our ERROR extension) carries a Response."""
    envelope = decode(encode_response(Command.ERROR, 400, "bad"))
    assert envelope.command is Command.ERROR
    assert envelope.response == Response(code=400, msg="bad")


def test_lone_surrogate_in_text_frame_rejected() -> None:
    """A str frame holding a lone surrogate is MalformedFrame (it is not valid UTF-8)."""
    frame = INIT_FRAME.decode()[:-2] + "\ud800" + '"}'
    with pytest.raises(MalformedFrame):
        decode(frame)


@pytest.mark.parametrize("escape", ["\\ud800", "\\udfff", "a\\ud83d", "\\ude00b"])
def test_lone_surrogate_escape_in_payload_rejected(escape: str) -> None:
    """A JSON escape that yields a lone surrogate in source/msg is InvalidPayload."""
    req = b'{"source":"' + escape.encode() + b'","target":"","body":null}'
    with pytest.raises(InvalidPayload) as info:
        decode(raw_frame(1, b64(req)))
    assert info.value.command is Command.INIT
    resp = b'{"code":0,"msg":"' + escape.encode() + b'"}'
    with pytest.raises(InvalidPayload):
        decode(raw_frame(101, b64(resp)))


def test_surrogate_pair_escape_accepted() -> None:
    """A valid escaped surrogate pair decodes to the astral character."""
    req = b'{"source":"\\ud83c\\udf89","target":"","body":null}'
    assert decode(raw_frame(1, b64(req))).request.source == "🎉"


def test_lone_surrogate_escape_in_outer_payload_rejected() -> None:
    """A payload string holding an escaped lone surrogate is InvalidBase64, not a crash."""
    with pytest.raises(InvalidBase64) as info:
        decode(b'{"command":1,"payload":"\\ud800AAA"}')
    assert info.value.command is Command.INIT


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_rejected(constant: str) -> None:
    """NaN/Infinity literals (not JSON) are rejected in the frame and in payloads."""
    with pytest.raises(MalformedFrame):
        decode(b'{"command":' + constant.encode() + b',"payload":"e30="}')
    with pytest.raises(InvalidPayload) as info:
        decode(raw_frame(102, b64(b'{"code":' + constant.encode() + b',"msg":""}')))
    assert info.value.command is Command.ANSWER_RESPONSE


@pytest.mark.parametrize(
    "frame",
    [
        b'{"command":1,"payload":"\xff"}',
        b'\xef\xbb\xbf{"command":1,"payload":"e30="}',  # UTF-8 BOM: Go rejects it too
        b'{"command":1,"payload":"e30=","x":"\xc3\x28"}',
        b'{"command":1,"payload":"e30=","x":"\xed\xa0\x80"}',  # CESU surrogate bytes
        '{"command":1,"payload":"e30="}'.encode("utf-16"),
        '{"command":1,"payload":"e30="}'.encode("utf-32-le"),
    ],
)
def test_invalid_utf8_frame_rejected(frame: bytes) -> None:
    """Frames that are not UTF-8 JSON (bad bytes, BOM, UTF-16/32) are MalformedFrame."""
    with pytest.raises(MalformedFrame):
        decode(frame)


def test_invalid_utf8_payload_rejected_with_command() -> None:
    """A payload whose decoded bytes are not UTF-8 is InvalidPayload naming the command."""
    with pytest.raises(InvalidPayload) as info:
        decode(raw_frame(3, b64(b'{"source":"\xff","target":"","body":null}')))
    assert info.value.command is Command.OFFER


@pytest.mark.parametrize(
    ("payload", "command"),
    [
        ({"source": 1}, 1),
        ({"source": None}, 1),
        ({"target": ["a"]}, 3),
        ({"body": 5}, 4),
        ({"body": True}, 2),
        ({"body": [1, 2]}, 2),
        ({"code": "0"}, 101),
        ({"code": 0.0}, 101),
        ({"code": True}, 102),
        ({"code": 2**63}, 103),
        ({"code": -(2**63) - 1}, 103),
        ({"msg": 1}, 104),
    ],
)
def test_wrong_field_types_rejected(payload: dict[str, object], command: int) -> None:
    """Wrongly typed Request/Response fields raise InvalidPayload with the command set."""
    with pytest.raises(InvalidPayload) as info:
        decode(frame_with_payload_json(command, payload))
    assert info.value.command == command


@pytest.mark.parametrize("inner", [b"[]", b'"x"', b"1", b"null", b"", b"{", b"{}x"])
def test_payload_not_a_json_object_rejected(inner: bytes) -> None:
    """A payload that is not one JSON object is InvalidPayload with the command set."""
    with pytest.raises(InvalidPayload) as info:
        decode(raw_frame(2, b64(inner)))
    assert info.value.command is Command.ANSWER


@pytest.mark.parametrize("frame", [b"", b"null", b"[]", b"1", b'"x"', b"{", b"{}", b"{} {}"])
def test_frame_not_a_json_object_rejected(frame: bytes) -> None:
    """A frame that is not one JSON object with command/payload is MalformedFrame."""
    with pytest.raises(MalformedFrame) as info:
        decode(frame)
    assert info.value.command is None


@pytest.mark.parametrize("payload", [None, 1, ["e30="], {"a": 1}, True])
def test_payload_not_a_string_rejected(payload: object) -> None:
    """A payload that is not a base64 string is rejected naming the command."""
    with pytest.raises(ProtocolError) as info:
        decode(raw_frame(4, payload))
    assert info.value.command is Command.CANDIDATE


def test_int64_code_bounds_roundtrip() -> None:
    """Response codes at the int64 bounds decode and re-encode unchanged."""
    for code in (2**63 - 1, -(2**63)):
        frame = encode_response(Command.OFFER_RESPONSE, code, "x")
        assert decode(frame).response.code == code
        assert decode(frame).to_frame() == frame


def test_deeply_nested_json_is_protocol_error() -> None:
    """Pathologically nested JSON raises ProtocolError, not RecursionError."""
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(MalformedFrame):
        decode(deep)
    with pytest.raises(InvalidPayload):
        decode(raw_frame(1, b64(b'{"source":' + deep + b"}")))


def test_huge_integer_is_protocol_error() -> None:
    """An integer literal too long for Python's int parser raises ProtocolError."""
    with pytest.raises(ProtocolError):
        decode(b'{"command":' + b"9" * 5000 + b',"payload":"e30="}')


# -- ProtocolError.command ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "exc", "command"),
    [
        (raw_frame(3, "not base64!"), InvalidBase64, Command.OFFER),
        (raw_frame(1, "e30"), InvalidBase64, Command.INIT),
        (raw_frame(103, "e30"), InvalidBase64, Command.OFFER_RESPONSE),
        (raw_frame(2, b64(b"not json")), InvalidPayload, Command.ANSWER),
        (raw_frame(104, b64(b"[1]")), InvalidPayload, Command.CANDIDATE_RESPONSE),
        (raw_frame(9, b64(b"{}")), UnknownCommand, None),
        (raw_frame("3", b64(b"{}")), MalformedFrame, None),
        (b"not json", MalformedFrame, None),
        (b'{"command":3,', MalformedFrame, None),
    ],
)
def test_protocol_error_command(
    frame: bytes, exc: type[ProtocolError], command: Command | None
) -> None:
    """ProtocolError.command is the frame's command when readable, else None."""
    with pytest.raises(exc) as info:
        decode(frame)
    assert info.value.command is command
    assert info.value.code == 400
    assert isinstance(info.value, ValueError)


def test_protocol_error_defaults() -> None:
    """ProtocolError subclasses carry code 400 and command None by default."""
    for cls in (ProtocolError, MalformedFrame, InvalidBase64, UnknownCommand, InvalidPayload):
        err = cls("boom")
        assert err.code == 400 and err.command is None and str(err) == "boom"


def test_envelope_wrong_accessor_raises() -> None:
    """Envelope.request on a response (and .response on a request) raises InvalidPayload."""
    response = decode(GOLDEN[1].frame)
    with pytest.raises(InvalidPayload) as info:
        _ = response.request
    assert info.value.command is Command.INIT_RESPONSE
    request = decode(INIT_FRAME)
    with pytest.raises(InvalidPayload):
        _ = request.response


def test_decode_payload_uses_command_kind() -> None:
    """decode_payload decodes a Request for commands 1-4 and a Response for 100-104."""
    assert isinstance(decode_payload(Command.INIT, b"{}"), Request)
    assert isinstance(decode_payload(Command.ERROR, b"{}"), Response)
    with pytest.raises(InvalidPayload):
        decode_payload(Command.INIT_RESPONSE, b'{"code":"x"}')


# -- Command -------------------------------------------------------------------------------


def test_command_values_and_response_mapping() -> None:
    """Requests 1-7 map to responses 101-107; responses and ERROR map to ERROR (100)."""
    assert [int(c) for c in Command] == [1, 2, 3, 4, 5, 6, 7, *range(100, 108)]
    assert Command.INIT.response is Command.INIT_RESPONSE
    assert Command.ANSWER.response is Command.ANSWER_RESPONSE
    assert Command.OFFER.response is Command.OFFER_RESPONSE
    assert Command.CANDIDATE.response is Command.CANDIDATE_RESPONSE
    assert Command.JOIN.response is Command.JOIN_RESPONSE
    assert Command.PRESENCE.response is Command.PRESENCE_RESPONSE
    assert Command.LEAVE.response is Command.LEAVE_RESPONSE
    for command in (Command.ERROR, *range(101, 108)):
        assert Command(command).response is Command.ERROR
    assert [c.is_request for c in Command] == [True] * 7 + [False] * 8


# -- construction / encode helpers -------------------------------------------------------


def test_encode_request_helper() -> None:
    """encode_request builds the same frame as encode(Request(...))."""
    frame = encode_request(Command.CANDIDATE, "a", "b", b"candidate:x")
    assert frame == encode(Command.CANDIDATE, Request(source="a", target="b", body=b"candidate:x"))
    assert decode(frame) == Envelope(
        command=Command.CANDIDATE, content=Request(source="a", target="b", body=b"candidate:x")
    )


def test_models_are_frozen() -> None:
    """Decoded envelopes are immutable."""
    envelope = decode(INIT_FRAME)
    with pytest.raises(pydantic.ValidationError):
        envelope.request.source = "other"


def test_python_construction_rejects_lone_surrogate() -> None:
    """Building a Request with a lone surrogate fails early (it could not be encoded)."""
    with pytest.raises(ValueError):
        Request(source="\ud800")
