"""rtc_signal.proto.peek_request (the fast request reader) agrees with :func:`proto.decode`.

``proto.peek_request`` reads request frames without pydantic (msgspec's C
decoder). It must accept exactly the frames ``proto.decode`` accepts as
requests, with the same command, source and target, and leave everything else
to ``decode``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import itertools
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtc_signal.proto import ProtocolError, decode, peek_request, routing
from rtc_signal.proto.gojson import go_string
from tests.helpers_golden import golden_frames


def agrees(frame: bytes | str) -> None:
    quick = peek_request(frame)
    try:
        envelope = decode(frame)
    except ProtocolError:
        assert quick is None, (frame, quick)
        return
    if not envelope.command.is_request:
        assert quick is None, (frame, quick)
        return
    request = envelope.request
    assert quick == (envelope.command, request.source, request.target), frame


IDS = st.text(max_size=8) | st.sampled_from(["a", "\ud800", "é", "<&>", '"', "\\", "\n", ""])
VALUES = (
    st.none()
    | st.integers()
    | st.booleans()
    | st.floats()
    | IDS
    | st.lists(st.integers(), max_size=2)
)
B64 = st.binary(max_size=12).map(lambda b: base64.b64encode(b).decode())
ODD_B64 = st.sampled_from(
    ['"QQ=="', '"QR=="', '"QQ=A"', '"Q==="', '"===="', '"QQQ="', '"QQ"', '""', '"A"', '"QQ==\\n"']
)
# 1,500 examples each (~7 s on the CI machine): the suite must stay under 10 minutes
SETTINGS = settings(max_examples=1500, suppress_health_check=list(HealthCheck), deadline=None)


@st.composite
def json_frames(draw: st.DrawFn) -> bytes | str:
    """Frames of any layout: valid or not, requests or responses."""
    request: dict[str, object] = {}
    for key in ("source", "target", "body", "extra"):
        if draw(st.booleans()):
            request[key] = draw(st.none() | B64 | VALUES) if key == "body" else draw(IDS | VALUES)
    raw = json.dumps(request, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 9)) == 0:
        raw = draw(st.binary(max_size=20))
    good = base64.b64encode(raw).decode()
    payload = draw(
        st.sampled_from(
            [good, good + "=", good.rstrip("="), base64.urlsafe_b64encode(raw).decode()]
        )
        | VALUES
    )
    commands = [1, 2, 3, 4, 101, 103, 100, 7, True, 3.0, "3", None, -1]
    outer = {"command": draw(st.sampled_from(commands)), "payload": payload}
    if draw(st.integers(0, 5)) == 0:
        del outer[draw(st.sampled_from(["command", "payload"]))]
    text = json.dumps(outer, ensure_ascii=draw(st.booleans()))
    mangle = draw(st.sampled_from(["none", "nan", "truncate"]))
    if mangle == "nan":
        text = text.replace("1", "NaN", 1)
    elif mangle == "truncate":
        text = text[: draw(st.integers(0, len(text)))]
    return text if draw(st.booleans()) else text.encode("utf-8", "surrogatepass")


@st.composite
def go_layout_frames(draw: st.DrawFn) -> bytes | str:
    """Frames laid out as Go writes them, with odd values and small corruptions."""
    body = draw(st.none() | st.binary(max_size=30))
    body_json = "null" if body is None else f'"{base64.b64encode(body).decode()}"'
    body_json = draw(st.just(body_json) | ODD_B64 | st.sampled_from(["nul", "5", "null "]))
    source = draw(IDS)
    source_json = draw(st.sampled_from([go_string(source), f'"{source}"']))
    payload = (
        f'{{"source":{source_json},"target":{go_string(draw(IDS))},"body":{body_json}}}'
    ).encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 4)) == 0:
        at = draw(st.integers(0, len(payload)))
        payload = payload[:at] + draw(st.binary(max_size=3)) + payload[at:]
    encoded = base64.b64encode(payload).decode()
    encoded = draw(st.sampled_from([encoded, encoded + "=", encoded.rstrip("=")]))
    command = draw(st.sampled_from(["1", "2", "3", "4", "0", "5", "9", "31", "03", " 3"]))
    frame = f'{{"command":{command},"payload":"{encoded}"}}'
    if draw(st.integers(0, 4)) == 0:
        at = draw(st.integers(0, len(frame)))
        frame = frame[:at] + draw(st.sampled_from(["", " ", "\\", '"', "x", "\n"])) + frame[at:]
    return frame if draw(st.booleans()) else frame.encode()


@SETTINGS
@given(json_frames())
def test_quick_decoder_agrees_with_proto(frame: bytes | str) -> None:
    agrees(frame)


@SETTINGS
@given(go_layout_frames())
def test_go_layout_decoder_agrees_with_proto(frame: bytes | str) -> None:
    agrees(frame)


def test_golden_requests_take_the_fast_path() -> None:
    for raw in golden_frames():
        for variant in (raw, raw.decode()):
            agrees(variant)
            if decode(variant).command.is_request:
                assert peek_request(variant) is not None


@pytest.mark.parametrize(
    "body",
    [
        '"QUFB"}x',  # bytes after the closing brace
        '"QUFB"}abcd',
        '"QUFBQUFB"}abcd',
        '"QUFB"}}',
        '"QQ=="}"',
        '"QQ==""}',  # a quote inside
        '"Q=Q="}',  # padding not at the end
        '"QQ=="x}',
        'x"QUFB"}',
        '"QUF"}',  # not a multiple of 4
        '"QUFB}',
        '"QUFB"',
        '"QU\\nFB"}',
        '""}',
        '"QQ=="}',
        '"QUE="}',
        "null}",
        "null}}",
    ],
)
def test_go_layout_body_tail_is_checked_like_decode(body: str) -> None:
    """Bodies at the end of a Go-layout payload: accepted exactly when decode accepts them."""
    for source, target in (("a", "b"), ("", ""), ("é", "x"), ('a"', "b"), ("a", "b\\")):
        payload = f'{{"source":"{source}","target":"{target}","body":{body}'.encode()
        encoded = base64.b64encode(payload).decode()
        for command in (1, 3):
            frame = f'{{"command":{command},"payload":"{encoded}"}}'
            agrees(frame)
            agrees(frame.encode())


def _strict(text: bytes) -> bytes | None:
    """What proto accepts as base64 (strict ``a2b_base64`` plus padding to a multiple of 4)."""
    try:
        data = binascii.a2b_base64(text, strict_mode=True)
    except binascii.Error:
        return None
    return data if len(text) == 4 * ((len(data) + 2) // 3) else None


def _fast(text: bytes) -> bytes | None:
    """The fast reader's payload decode (msgspec's, of the outer Message)."""
    try:
        return routing._message(b'{"command":1,"payload":"' + text + b'"}').payload
    except (routing.msgspec.DecodeError, ValueError):
        return None


#: base64 characters, padding, the other alphabet, whitespace, a control
#: character and a non-ASCII byte
_B64_EDGES = [b"Q", b"B", b"g", b"/", b"+", b"=", b"-", b"_", b" ", b"\n", b"\x00", b"\x80"]


def test_payload_decoder_accepts_exactly_strict_base64_short() -> None:
    """Every string of up to 5 characters from the edge cases: the fast payload
    decode (msgspec) and strict ``a2b_base64`` accept the same, with the same bytes."""
    for n in range(6):
        for chars in itertools.product(_B64_EDGES, repeat=n):
            text = b"".join(chars)
            assert _fast(text) == _strict(text), text


@settings(max_examples=400, deadline=None)  # (the exhaustive test above does the bulk)
@given(
    st.lists(
        st.sampled_from(_B64_EDGES) | st.sampled_from([b"QUFB", b"QQ==", b"QUE="]), max_size=40
    )
)
def test_payload_decoder_accepts_exactly_strict_base64(parts: list[bytes]) -> None:
    """Longer mixes of valid quads and edge cases: the same verdict and bytes."""
    text = b"".join(parts)
    assert _fast(text) == _strict(text), text


def _b64json(payload: str) -> str:
    return base64.b64encode(payload.encode("utf-8", "surrogatepass")).decode()


def _frame(payload: str, command: str = "3") -> str:
    """A frame in Go's layout whose payload is the base64 of ``payload``."""
    return '{"command":' + command + ',"payload":"' + _b64json(payload) + '"}'


_AB = _b64json('{"source":"a","target":"b","body":null}')
_BA = _b64json('{"source":"b","target":"a","body":null}')
_DEEP = "[" * 3000 + "]" * 3000
#: the payload with one base64 character written as a JSON escape
_ESCAPED = _AB[:4] + f"\\u00{ord(_AB[4]):x}" + _AB[5:]


@pytest.mark.parametrize(
    "frame",
    [
        '{"command":3,"command":4,"payload":"' + _AB + '"}',  # duplicate keys: the last wins
        '{"command":3,"payload":"' + _AB + '","payload":"' + _BA + '"}',
        _frame('{"source":"a","source":"c","target":"b"}'),
        '{"command":3,"payload":"' + _ESCAPED + '"}',
        _frame('{"source":"\\u0061","target":"\\/b"}'),
        _frame('{"source":"\\ud800","target":"b"}'),  # a lone surrogate, escaped
        _frame('{"source":"\\ud83d\\ude00","target":"b"}'),  # a pair
        _frame('{"source":"\ud800","target":"b"}'),  # a lone surrogate, raw
        _frame('{"source":"a","target":"b","x":' + _DEEP + "}"),  # deep nesting
        '{"command":3,"x":' + _DEEP + ',"payload":"' + _AB + '"}',
        '{"command":' + str(2**64 + 3) + ',"payload":"' + _AB + '"}',  # beyond 64 bits
        '{"command":3e0,"payload":"' + _AB + '"}',
        '{"command":-0,"payload":"' + _AB + '"}',
        '{"Command":3,"payload":"' + _AB + '"}',  # keys are case-sensitive
        ' \t\r\n{"command":3,"payload":"' + _AB + '"} \n',
        '\ufeff{"command":3,"payload":"' + _AB + '"}',  # a byte order mark
        '{"command":3,"payload":"' + _AB + '"}\x00',
        '{"command":3,"payload":"' + _AB + '\\n"}',
        '{"command":3,"payload":"' + _AB + '"}\ud800',  # (a str that is not valid Unicode)
        _frame('{"source":"a","target":"b","body":"QQ==","body":null}'),
        _frame('{"source":"a","target":"b","body":"QQ=="}  '),
        _frame('{"source":"a","target":1}'),
        _frame("[]"),
        _frame('{"code":0,"msg":"ok"}', command="101"),  # a response
    ],
)
def test_edge_frames_agree_with_proto(frame: str) -> None:
    """Frames the property tests do not make (duplicate keys, escapes in base64,
    surrogates, deep nesting, huge ints, BOMs): the fast reader and decode agree."""
    agrees(frame)
    with contextlib.suppress(UnicodeEncodeError):
        agrees(frame.encode())


def _frame_bytes(payload: bytes) -> bytes:
    return b'{"command":3,"payload":"' + base64.b64encode(payload) + b'"}'


@pytest.mark.parametrize(
    "frame",
    [
        _frame_bytes(b'{"\x80source":"","target":"b"}'),  # in a key msgspec skips
        _frame_bytes(b'{"x":"\xff","source":"a","target":"b"}'),  # in a value it skips
        _frame_bytes(b'{"x":"\xed\xa0\x80","source":"a","target":"b"}'),  # UTF-8 surrogate
        _frame_bytes(b'{"source":"\xc3\xa9","target":"b"}'),  # valid: e acute
        b'{"x":"\xff","command":3,"payload":"' + _AB.encode() + b'"}',
        b'{"x":"\xc3\xa9","command":3,"payload":"' + _AB.encode() + b'"}',
    ],
)
def test_bytes_that_are_not_utf8_agree_with_proto(frame: bytes) -> None:
    """Invalid UTF-8 anywhere, also in fields the fast reader skips: refused by both."""
    agrees(frame)
