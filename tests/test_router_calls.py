"""Calls belong to their callers: the router's call integrity rules, without a network.

An answer reaches an offer peer, and candidates travel, only between the two
sides of a call that the offer peer started with an Offer; hostile peers that
lie in ``source``/``target`` get 403 and nothing reaches their victim, while
the victim's own call (the canary) goes on.
"""

from __future__ import annotations

import pytest

from rtc_signal.proto import Command
from rtc_signal.signaling.calls import IDLE_TICKS, MAX_CALLS_PER_OFFER, CallTable
from rtc_signal.signaling.router import FORBIDDEN, OK, Held, Path, Router
from tests.test_router import (
    A1,
    A2,
    ANSWER_ID,
    O1,
    O2,
    OFF,
    OFFER_ID,
    REG,
    answer,
    candidate,
    init,
    offer,
    single_forward,
    single_send,
)

MALLORY = "mallory"


@pytest.fixture
def call() -> Router:
    """A1 registered as ANSWER_ID, A2 as MALLORY; O1 (OFFER_ID) has offered to ANSWER_ID."""
    router = Router()
    for conn, path in ((A1, REG), (A2, REG), (O1, OFF), (O2, OFF)):
        router.connect(conn, path)
    assert single_send(router.receive(A1, init(ANSWER_ID)), A1)[1] == OK
    assert single_send(router.receive(A2, init(MALLORY)), A2)[1] == OK
    assert single_forward(router.receive(O1, offer(OFFER_ID, ANSWER_ID))).target == A1
    return router


def refused(router: Router, conn: int, frame: bytes, reply: Command) -> None:
    assert single_send(router.receive(conn, frame), conn) == (reply, FORBIDDEN)


def canary_goes_on(router: Router) -> None:
    """The real call: its answer and candidates still travel both ways."""
    assert single_forward(router.receive(A1, answer(ANSWER_ID, OFFER_ID))).target == O1
    assert single_forward(router.receive(A1, candidate(ANSWER_ID, OFFER_ID))).target == O1
    assert single_forward(router.receive(O1, candidate(OFFER_ID, ANSWER_ID))).target == A1


def test_answer_from_a_peer_that_was_not_called_is_refused(call: Router) -> None:
    """An answer peer answering an offer peer that called someone else gets 403."""
    refused(call, A2, answer(MALLORY, OFFER_ID), Command.ANSWER_RESPONSE)
    canary_goes_on(call)


def test_candidate_injection_from_a_third_peer_is_refused(call: Router) -> None:
    """A third answer peer's candidates never reach an offer peer that did not call it."""
    refused(call, A2, candidate(MALLORY, OFFER_ID), Command.CANDIDATE_RESPONSE)
    canary_goes_on(call)


def test_an_offer_peers_call_lets_only_its_callee_answer() -> None:
    """An offer peer that called one answer peer (offer or early candidate) can be
    answered by that one, not by another answer peer it never called."""
    router = Router()
    for conn, path in ((A1, REG), (A2, REG), (O1, OFF)):
        router.connect(conn, path)
    single_send(router.receive(A1, init(ANSWER_ID)), A1)
    single_send(router.receive(A2, init(MALLORY)), A2)
    single_forward(router.receive(O1, candidate(OFFER_ID, ANSWER_ID)))
    refused(router, A2, answer(MALLORY, OFFER_ID), Command.ANSWER_RESPONSE)
    assert single_forward(router.receive(A1, answer(ANSWER_ID, OFFER_ID))).target == O1


def test_a_refused_frame_is_never_forwarded_whatever_source_says(call: Router) -> None:
    """Lying in source (claiming to be the called peer) changes nothing: 403, no Forward."""
    refused(call, A2, answer(ANSWER_ID, OFFER_ID), Command.ANSWER_RESPONSE)
    refused(call, A2, candidate(ANSWER_ID, OFFER_ID), Command.CANDIDATE_RESPONSE)
    canary_goes_on(call)


def test_the_call_ends_when_the_offer_connection_leaves(call: Router) -> None:
    """A new connection reusing the offer ID inherits no call from the old one."""
    call.disconnect(O1)
    assert call.calls() == 0
    call.connect(O1 + 100, OFF)
    assert single_forward(call.receive(O1 + 100, offer(OFFER_ID, MALLORY))).target == A2
    refused(call, A1, answer(ANSWER_ID, OFFER_ID), Command.ANSWER_RESPONSE)


def test_the_call_ends_when_the_answer_peer_leaves_for_good(call: Router) -> None:
    """An answer peer that leaves ends its calls: whoever registers its ID next cannot answer."""
    call.disconnect(A1)
    call.connect(A1 + 100, REG)
    single_send(call.receive(A1 + 100, init(ANSWER_ID)), A1 + 100)
    refused(call, A1 + 100, answer(ANSWER_ID, OFFER_ID), Command.ANSWER_RESPONSE)


def held_call() -> tuple[Router, Held]:
    """A call whose answer peer (resume key "key") dropped and is held."""
    router = Router()
    router.connect(A1, REG, resume="key")
    router.connect(O1, OFF)
    single_send(router.receive(A1, init(ANSWER_ID)), A1)
    single_forward(router.receive(O1, offer(OFFER_ID, ANSWER_ID)))
    held = router.disconnect(A1)
    assert held is not None
    return router, held


def test_a_held_answer_peer_keeps_its_calls_across_a_reconnect() -> None:
    """With a resume key, the reconnected answer peer may still answer its caller."""
    router, _ = held_call()
    router.connect(A2, REG, resume="key")
    assert single_send(router.receive(A2, init(ANSWER_ID)), A2)[1] == OK
    assert single_forward(router.receive(A2, answer(ANSWER_ID, OFFER_ID))).target == O1


def test_a_released_hold_ends_the_calls() -> None:
    """When the grace period ends without a reconnect, the answer peer's calls end too."""
    router, held = held_call()
    assert router.release(held)
    assert router.calls() == 0


def test_calls_without_signaling_end_after_idle_ticks(call: Router) -> None:
    """Signaling refreshes a call; IDLE_TICKS ticks of silence end it."""
    for _ in range(IDLE_TICKS - 1):
        call.tick()
    canary_goes_on(call)  # refreshes it
    for _ in range(IDLE_TICKS - 1):
        assert call.tick() == 0
    assert call.tick() == 1
    refused(call, A1, answer(ANSWER_ID, OFFER_ID), Command.ANSWER_RESPONSE)


def test_an_offer_connection_keeps_at_most_max_calls() -> None:
    """Past MAX_CALLS_PER_OFFER calls on one connection, the oldest is forgotten."""
    table = CallTable()
    for n in range(MAX_CALLS_PER_OFFER + 1):
        table.start(O1, f"peer-{n}")
    assert len(table) == MAX_CALLS_PER_OFFER
    assert not table.touch(O1, "peer-0")
    assert table.touch(O1, f"peer-{MAX_CALLS_PER_OFFER}")
    table.start(O1, "peer-1")  # restarting makes it the newest
    table.start(O1, "peer-new")
    assert table.touch(O1, "peer-1") and not table.touch(O1, "peer-2")


def test_calls_of_two_offer_connections_are_separate() -> None:
    """One offer connection's call with an answer peer is not another's."""
    table = CallTable()
    table.start(O1, ANSWER_ID)
    assert not table.touch(O2, ANSWER_ID)
    table.drop_answer(ANSWER_ID)
    assert len(table) == 0 and not table.touch(O1, ANSWER_ID)


def test_path_roles_are_unchanged() -> None:
    """Offers still only travel on /offer and answers on /register (checked before calls)."""
    router = Router()
    router.connect(A1, Path.REGISTER)
    single_send(router.receive(A1, init(ANSWER_ID)), A1)
    assert single_send(router.receive(A1, offer(ANSWER_ID, OFFER_ID)), A1)[1] == FORBIDDEN
