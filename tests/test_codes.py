"""One-time codes, fingerprints, SAS and the SPAKE2 exchange, without a network
(peers.codes, peers.fingerprints, peers.pake: sans-I/O)."""

from __future__ import annotations

import base64
import json

import pytest

from rtc_signal.peers.codes import (
    PASSWORD_BITS,
    Code,
    CodeError,
    new_code,
    parse_code,
)
from rtc_signal.peers.codewords import WORDS
from rtc_signal.peers.fingerprints import (
    SAS_BITS,
    FingerprintError,
    canonical,
    fingerprints,
    short_auth_string,
)
from rtc_signal.peers.pake import (
    ABORT_BODY,
    MISMATCH_MESSAGE,
    CodeAuth,
    CodeMismatch,
    CodeProtocolError,
    is_pake_body,
)
from rtc_signal.proto import SessionDescription

FP_A = "AB:CD:" + ":".join(["01"] * 30)
FP_B = "12:34:" + ":".join(["02"] * 30)
FP_EVIL = "66:66:" + ":".join(["03"] * 30)


def sdp(kind: str, *fps: str) -> str:
    lines = ["v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0"]
    lines += [f"a=fingerprint:sha-256 {fp}" for fp in fps]
    lines += ["m=application 9 UDP/DTLS/SCTP webrtc-datachannel", f"a=setup:{kind}"]
    return "\r\n".join(lines) + "\r\n"


def desc(kind: str, *fps: str) -> SessionDescription:
    return SessionDescription(type=kind, sdp=sdp("actpass" if kind == "offer" else "active", *fps))  # type: ignore[arg-type]


# -- codes ------------------------------------------------------------------


def test_word_list_has_2048_unique_words_identified_by_four_letters() -> None:
    assert len(WORDS) == 2048
    assert len({w[:4] for w in WORDS}) == 2048
    assert all(w.isascii() and w.isalpha() and w.islower() for w in WORDS)


def test_codes_carry_at_least_16_bits_of_password_beside_the_number() -> None:
    assert PASSWORD_BITS == 22
    code = new_code()
    assert 1 <= code.number <= 999 and len(code.words) == 2
    assert all(w in WORDS for w in code.words)


def test_fresh_codes_differ() -> None:
    assert len({str(new_code()) for _ in range(50)}) > 45


def test_code_number_range_grows_with_each_taken_id() -> None:
    assert max(new_code(attempt=3).number for _ in range(200)) > 999


def test_code_round_trips_and_maps_its_number_to_the_peer_id() -> None:
    code = Code(7, ("zebra", "abandon"))
    assert str(code) == "7-zebra-abandon"
    assert parse_code(str(code)) == code
    assert code.peer_id == "code-7"
    assert code.password == b"7-zebra-abandon"


def test_typed_codes_are_read_leniently() -> None:
    assert parse_code("  7 ZEBRA  aban ") == Code(7, ("zebra", "abandon"))
    assert parse_code("007-zebra-abandonn") == Code(7, ("zebra", "abandon"))
    assert parse_code("12-act-zoo") == Code(12, ("act", "zoo"))


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "number and 2 words"),
        ("7-zebra", "number and 2 words"),
        ("7-zebra-zoo-zoo", "number and 2 words"),
        ("x-zebra-zoo", "starts with a number"),
        ("0-zebra-zoo", "must be 1 to"),
        ("99999999999-zebra-zoo", "must be 1 to"),
        ("7-zeb-zoo", "not a code word"),
        ("7-qqqq-zoo", "not a code word"),
        ("٣-zebra-zoo", "starts with a number"),
    ],
)
def test_bad_codes_are_refused_with_a_reason(text: str, why: str) -> None:
    with pytest.raises(CodeError, match=why):
        parse_code(text)


# -- fingerprints and SAS ---------------------------------------------------------


def test_fingerprints_reads_every_line_normalized_and_sorted() -> None:
    text = sdp("actpass", FP_B.lower(), FP_A) + "a=fingerprint:SHA-512 aa:bb\r\n"
    assert fingerprints(text) == (f"sha-256 {FP_B}", f"sha-256 {FP_A}", "sha-512 AA:BB")
    assert canonical(text) == f"sha-256 {FP_B}\nsha-256 {FP_A}\nsha-512 AA:BB\n".encode()


def test_fingerprints_of_one_certificate_do_not_depend_on_layout() -> None:
    assert canonical(sdp("a", FP_A, FP_A)) == canonical(
        sdp("b", FP_A.lower()).replace("\r\n", "\n")
    )


def test_an_sdp_without_fingerprint_cannot_be_authenticated() -> None:
    with pytest.raises(FingerprintError):
        fingerprints(sdp("actpass"))


def test_sas_is_five_words_from_both_fingerprints_in_role_order() -> None:
    assert SAS_BITS == 55
    sas = short_auth_string(sdp("o", FP_A), sdp("a", FP_B))
    assert len(sas.split()) == 5 and all(w in WORDS for w in sas.split())
    assert sas == short_auth_string(sdp("x", FP_A.lower()), sdp("y", FP_B))
    assert sas != short_auth_string(sdp("o", FP_B), sdp("a", FP_A))  # roles matter
    assert sas != short_auth_string(sdp("o", FP_A), sdp("a", FP_EVIL))  # a swapped answer shows


# -- SPAKE2 and the fingerprint MACs ---------------------------------------------

CODE = Code(7, ("zebra", "abandon"))


def pair(
    offer_code: Code = CODE, answer_code: Code = CODE, answer_seen_offer_id: str = "offer-1"
) -> tuple[CodeAuth, CodeAuth]:
    offer = CodeAuth(offer_code, "offer", "offer-1", "code-7")
    answer = CodeAuth(answer_code, "answer", answer_seen_offer_id, "code-7")
    answer.receive(offer.message())
    offer.receive(answer.message())
    return offer, answer


def test_pake_messages_are_marked_candidate_bodies() -> None:
    offer = CodeAuth(CODE, "offer", "offer-1", "code-7")
    assert is_pake_body(offer.message()) and is_pake_body(ABORT_BODY)
    assert not is_pake_body(b"candidate:1 1 udp 1 127.0.0.1 5000 typ host")
    assert not is_pake_body(None)


def test_same_code_authenticates_both_fingerprints() -> None:
    offer, answer = pair()
    offer_body = offer.seal(desc("offer", FP_A))
    assert json.loads(offer_body)["type"] == "offer"
    answer.open(offer_body, desc("offer", FP_A))
    answer_body = answer.seal(desc("answer", FP_B))
    offer.open(answer_body, desc("answer", FP_B))


def test_wrong_words_fail_at_the_answerer_first() -> None:
    offer, answer = pair(offer_code=Code(7, ("zebra", "zoo")))
    with pytest.raises(CodeMismatch, match=MISMATCH_MESSAGE):
        answer.open(offer.seal(desc("offer", FP_A)), desc("offer", FP_A))
    assert answer.failed


def test_the_number_is_part_of_the_password() -> None:
    offer, answer = pair(offer_code=Code(8, CODE.words))
    with pytest.raises(CodeMismatch):
        answer.open(offer.seal(desc("offer", FP_A)), desc("offer", FP_A))


def test_identities_are_bound() -> None:
    """A server relaying between other IDs than the peers use breaks the key."""
    offer, answer = pair(answer_seen_offer_id="offer-mallory")
    with pytest.raises(CodeMismatch):
        answer.open(offer.seal(desc("offer", FP_A)), desc("offer", FP_A))


def test_a_swapped_answer_fingerprint_is_detected_by_the_offerer() -> None:
    offer, answer = pair()
    body = answer.seal(desc("answer", FP_B))
    swapped = body.replace(FP_B.encode(), FP_EVIL.encode())
    with pytest.raises(CodeMismatch):
        offer.open(swapped, desc("answer", FP_EVIL))


def test_a_swapped_offer_fingerprint_is_detected_by_the_answerer() -> None:
    offer, answer = pair()
    with pytest.raises(CodeMismatch):
        answer.open(offer.seal(desc("offer", FP_A)), desc("offer", FP_A, FP_EVIL))


def test_a_mac_cannot_be_reflected_back_to_its_sender() -> None:
    offer, _ = pair()
    body = offer.seal(desc("offer", FP_A))
    document = json.loads(body)
    reflected = json.dumps({"type": "answer", "sdp": document["sdp"], "auth": document["auth"]})
    with pytest.raises(CodeMismatch):
        offer.open(reflected.encode(), desc("answer", FP_A))


@pytest.mark.parametrize("auth", [None, "", "!!", base64.b64encode(b"x" * 32).decode(), 5])
def test_missing_or_bad_mac_is_a_mismatch(auth: object) -> None:
    _, answer = pair()
    body = json.dumps({"type": "offer", "sdp": sdp("actpass", FP_A), "auth": auth}).encode()
    with pytest.raises(CodeMismatch):
        answer.open(body, desc("offer", FP_A))


def test_an_abort_from_the_peer_is_a_mismatch() -> None:
    offer = CodeAuth(CODE, "offer", "offer-1", "code-7")
    with pytest.raises(CodeMismatch, match="refused our proof"):
        offer.receive(ABORT_BODY)
    assert offer.failed


def test_a_garbled_or_reflected_pake_message_fails_the_attempt() -> None:
    offer = CodeAuth(CODE, "offer", "offer-1", "code-7")
    with pytest.raises(CodeMismatch):
        offer.receive(b"rtc-signal-pake:v1:not base64!")
    reflector = CodeAuth(CODE, "offer", "offer-1", "code-7")
    with pytest.raises(CodeMismatch):
        reflector.receive(reflector.message())


def test_one_exchange_per_side() -> None:
    offer, _ = pair()
    other = CodeAuth(CODE, "answer", "offer-1", "code-7")
    with pytest.raises(CodeProtocolError):
        offer.receive(other.message())


def test_no_mac_before_the_key() -> None:
    offer = CodeAuth(CODE, "offer", "offer-1", "code-7")
    with pytest.raises(CodeProtocolError):
        offer.seal(desc("offer", FP_A))
