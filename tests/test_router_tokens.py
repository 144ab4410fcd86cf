"""Unit tests of the router's token rules (``allowed_id``) and its 429 refusal,
without a network."""

from __future__ import annotations

import pytest

from rtc_signal.proto import Command, decode
from rtc_signal.signaling.router import FORBIDDEN, OK, TOO_MANY_REQUESTS, Path, Router, Send
from tests.test_router import answer, candidate, init, offer, single_forward, single_send

REG, OFF = Path.REGISTER, Path.OFFER
A1, A2, O1, O2 = 1, 2, 11, 12


@pytest.fixture
def router() -> Router:
    """A1 on /register and O1 on /offer hold tokens for alice and bob; A2 and O2
    are connections of an open server (no token)."""
    router = Router()
    router.connect(A1, REG, allowed_id="alice")
    router.connect(A2, REG)
    router.connect(O1, OFF, allowed_id="bob")
    router.connect(O2, OFF)
    return router


def test_registering_the_tokens_id_is_accepted(router: Router) -> None:
    assert single_send(router.receive(A1, init("alice")), A1) == (Command.INIT_RESPONSE, OK)
    assert router.answer_peers() == ["alice"]


def test_registering_another_id_than_the_tokens_is_403(router: Router) -> None:
    """Init whose source is not the token's ID: 403, nothing registered."""
    actions = router.receive(A1, init("mallory"))
    assert single_send(actions, A1) == (Command.INIT_RESPONSE, FORBIDDEN)
    assert "token" in decode(actions[0].frame).response.msg
    assert router.answer_peers() == []


def test_connection_without_token_may_register_any_id(router: Router) -> None:
    assert single_send(router.receive(A2, init("anyone")), A2) == (Command.INIT_RESPONSE, OK)


@pytest.mark.parametrize("first", ["offer", "candidate"])
def test_offer_side_binding_another_id_than_the_tokens_is_403(router: Router, first: str) -> None:
    """An offer peer's first Offer or Candidate must carry its token's ID as source."""
    router.receive(A2, init("carol"))
    frame = offer("mallory", "carol") if first == "offer" else candidate("mallory", "carol")
    reply = Command.OFFER_RESPONSE if first == "offer" else Command.CANDIDATE_RESPONSE
    assert single_send(router.receive(O1, frame), O1) == (reply, FORBIDDEN)
    assert router.offer_peers() == []
    forward = single_forward(router.receive(O1, offer("bob", "carol")))
    assert forward.target == A2
    assert router.offer_peers() == ["bob"]


def test_tokens_id_bound_then_the_whole_call_flows(router: Router) -> None:
    """alice (token) and bob (token) complete offer, answer and candidates."""
    router.receive(A1, init("alice"))
    assert single_forward(router.receive(O1, offer("bob", "alice"))).target == A1
    assert single_forward(router.receive(A1, answer("alice", "bob"))).target == O1
    assert single_forward(router.receive(O1, candidate("bob", "alice"))).target == A1
    assert single_forward(router.receive(A1, candidate("alice", "bob"))).target == O1


@pytest.mark.parametrize("text", [False, True])
def test_refuse_answers_429_in_the_frames_response_command_and_type(
    router: Router, text: bool
) -> None:
    """refuse() replies in kind (text/binary) with the request's response command."""
    for frame, command in (
        (offer("bob", "x", text=text), Command.OFFER_RESPONSE),
        (candidate("bob", "x", text=text), Command.CANDIDATE_RESPONSE),
        (init("alice", text=text), Command.INIT_RESPONSE),
        ("not json" if text else b"not json", Command.ERROR),
    ):
        action = router.refuse(O1, frame, TOO_MANY_REQUESTS, "slow down")
        assert isinstance(action, Send) and action.conn == O1
        assert isinstance(action.frame, str) == text
        envelope = decode(action.frame)
        assert envelope.command == command
        assert envelope.response.code == TOO_MANY_REQUESTS
        assert envelope.response.msg == "slow down"
    assert router.offer_peers() == []  # refused frames are not routed
