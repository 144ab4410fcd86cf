"""Unit tests of proto.bodies: SDP descriptions and ICE candidate lines."""

from __future__ import annotations

import json

import pytest

from rtc_signal.proto import (
    Command,
    InvalidPayload,
    ProtocolError,
    SessionDescription,
    decode,
    decode_candidate,
    decode_description,
    encode_candidate,
)
from tests.helpers_golden import golden_bodies, load_golden

OFFERS = golden_bodies(3)
ANSWERS = golden_bodies(2)
CANDIDATES = golden_bodies(4)

HOST = "candidate:2878742611 1 udp 2130706431 127.0.0.1 37667 typ host"
SRFLX = (
    "candidate:842163049 1 udp 1677729535 203.0.113.7 46154 typ srflx "
    "raddr 10.0.0.5 rport 46154 generation 0 ufrag abcd network-cost 999"
)
TCP = "candidate:1 1 tcp 1518280447 192.168.1.5 9 typ host tcptype active"


def test_golden_has_bodies() -> None:
    """The golden session provides offer, answer and candidate bodies to test with."""
    assert len(OFFERS) >= 1 and len(ANSWERS) >= 1 and len(CANDIDATES) >= 2


# -- SDP descriptions ----------------------------------------------------------


@pytest.mark.parametrize("body", OFFERS, ids=lambda b: b[:60].decode())
def test_golden_offer_roundtrip(body: bytes) -> None:
    """A golden (pion) offer body decodes and SessionDescription.to_json() gives its bytes."""
    description = decode_description(body, Command.OFFER, "offer")
    assert description.type == "offer"
    assert description.sdp.startswith("v=0\r\n")
    assert description.to_json() == body


@pytest.mark.parametrize("body", ANSWERS, ids=lambda b: b[:60].decode())
def test_golden_answer_roundtrip(body: bytes) -> None:
    """A golden (pion) answer body decodes and re-encodes to identical bytes."""
    description = decode_description(body, Command.ANSWER, "answer")
    assert description.type == "answer"
    assert description.sdp == json.loads(body)["sdp"]
    assert description.to_json() == body


def test_offer_body_with_answer_type_rejected() -> None:
    """An answer where an offer is expected is InvalidPayload naming the command."""
    with pytest.raises(InvalidPayload) as info:
        decode_description(ANSWERS[0], Command.OFFER, "offer")
    assert info.value.command is Command.OFFER
    with pytest.raises(InvalidPayload) as info:
        decode_description(OFFERS[0], Command.ANSWER, "answer")
    assert info.value.command is Command.ANSWER


@pytest.mark.parametrize("kind", ["pranswer", "rollback"])
def test_other_sdp_types_are_not_offer_or_answer(kind: str) -> None:
    """pranswer/rollback parse as descriptions but are refused where an offer is expected."""
    body = json.dumps({"type": kind, "sdp": ""}).encode()
    with pytest.raises(InvalidPayload):
        decode_description(body, Command.OFFER, "offer")


@pytest.mark.parametrize("body", [None, b""])
def test_missing_sdp_body_rejected(body: bytes | None) -> None:
    """An offer/answer without a body (null or empty) is InvalidPayload."""
    with pytest.raises(InvalidPayload) as info:
        decode_description(body, Command.ANSWER, "answer")
    assert info.value.command is Command.ANSWER


@pytest.mark.parametrize(
    "body",
    [
        b"v=0\r\n",
        b"{",
        b"[]",
        b"null",
        b'{"type":"offer"}',
        b'{"sdp":"v=0"}',
        b'{"type":"bogus","sdp":"v=0"}',
        b'{"type":"OFFER","sdp":"v=0"}',
        b'{"type":1,"sdp":"v=0"}',
        b'{"type":"offer","sdp":null}',
        b'{"type":"offer","sdp":["v=0"]}',
        b'{"type":"offer","sdp":"\\ud800"}',
        b'{"type":"offer","sdp":"\xff"}',
        b'{"type":"offer","sdp":NaN}',
    ],
)
def test_garbage_sdp_body_rejected(body: bytes) -> None:
    """Non-JSON, wrongly typed or incomplete SDP bodies raise InvalidPayload, command set."""
    with pytest.raises(InvalidPayload) as info:
        decode_description(body, Command.OFFER, "offer")
    assert info.value.command is Command.OFFER


def test_sdp_body_unknown_fields_ignored() -> None:
    """Extra fields in an SDP body (as browsers may add) are ignored."""
    body = b'{"sdp":"v=0\\r\\n","type":"offer","extra":{"a":[1]}}'
    description = decode_description(body, Command.OFFER, "offer")
    assert description == SessionDescription(type="offer", sdp="v=0\r\n")
    assert description.to_json() == b'{"type":"offer","sdp":"v=0\\r\\n"}'


def test_sdp_go_escaping() -> None:
    """SessionDescription.to_json escapes like Go (<>& and U+2028) and keeps UTF-8."""
    description = SessionDescription(type="answer", sdp="s=<é&>\u2028\r\n")
    assert description.to_json() == (
        b'{"type":"answer","sdp":"s=\\u003c' + "é".encode() + b'\\u0026\\u003e\\u2028\\r\\n"}'
    )


def test_golden_offer_frame_body_chain() -> None:
    """The golden offer frame -> Request.body -> SessionDescription chain works end to end."""
    offer_frame = next(g.frame for g in load_golden() if g.command == 3)
    body = decode(offer_frame).request.body
    description = decode_description(body, Command.OFFER, "offer")
    assert "m=application" in description.sdp


# -- candidates --------------------------------------------------------------------


@pytest.mark.parametrize("body", CANDIDATES, ids=lambda b: b.decode())
def test_golden_candidate_lines(body: bytes) -> None:
    """A golden candidate body decodes to its bare 'candidate:' line, unchanged."""
    line = decode_candidate(body)
    assert line == body.decode()
    assert line is not None and line.startswith("candidate:") and " typ host" in line
    assert encode_candidate(line) == body


@pytest.mark.parametrize("line", [HOST, SRFLX, TCP])
def test_candidate_roundtrip(line: str) -> None:
    """encode_candidate/decode_candidate round trip host, srflx and tcp candidates."""
    assert decode_candidate(encode_candidate(line)) == line


@pytest.mark.parametrize(
    "body",
    [
        ("a=" + HOST).encode(),
        ("a=" + HOST + "\r\n").encode(),
        (HOST + "\r\n").encode(),
        ("  " + HOST + "\n").encode(),
    ],
)
def test_candidate_prefix_and_whitespace_stripped(body: bytes) -> None:
    """The 'a=' prefix some stacks add and surrounding whitespace are removed."""
    assert decode_candidate(body) == HOST


@pytest.mark.parametrize("body", [None, b"", b"   ", b"\r\n", b"a=", b"a=\r\n"])
def test_empty_candidate_is_end_of_candidates(body: bytes | None) -> None:
    """An empty (or null, whitespace, bare 'a=') candidate body means end of candidates."""
    assert decode_candidate(body) is None


def test_encode_candidate_adds_prefix() -> None:
    """encode_candidate adds the 'candidate:' prefix when it is missing."""
    bare = HOST.removeprefix("candidate:")
    assert encode_candidate(bare) == HOST.encode()
    assert encode_candidate(HOST) == HOST.encode()


@pytest.mark.parametrize(
    "body",
    [
        b"garbage",
        b"candidate",
        b"candidate:",
        b"candidate:1 1 udp 2130706431 127.0.0.1 37667",
        b"candidate:1 1 udp 2130706431 127.0.0.1 37667 host typ",
        b"candidate:1 1 udp 2130706431 127.0.0.1 typ host",
        b"a=candidate:1 1 udp",
        b'{"candidate":"candidate:1 1 udp 1 1.2.3.4 5 typ host"}',
        b"\xff\xfe",
        b"candidate:1 1 udp 1 1.2.3.4 5 typ host \xc3\x28",
        b"end-of-candidates",
    ],
)
def test_garbage_candidate_rejected(body: bytes) -> None:
    """Non-candidate text, short lines, misplaced 'typ' or bad UTF-8 raise InvalidPayload."""
    with pytest.raises(InvalidPayload) as info:
        decode_candidate(body)
    assert info.value.command is Command.CANDIDATE
    assert isinstance(info.value, ProtocolError)
