"""The router's cluster rules, without a network or Redis (a ClusterRegistry):
claims before IDs are used, remote forwards for targets on other nodes, and
call integrity across nodes."""

from __future__ import annotations

import pytest

from rtc_signal.proto import Command
from rtc_signal.signaling.actions import (
    CLAIMED,
    LOCAL,
    TAKEN,
    UNAVAILABLE,
    Claim,
    RemoteForward,
)
from rtc_signal.signaling.registry import ANSWER, OFFER, ClusterRegistry
from rtc_signal.signaling.router import CONFLICT, FORBIDDEN, NOT_FOUND, OK, Router
from tests.test_router import (
    A1,
    A2,
    O1,
    O2,
    OFF,
    REG,
    answer,
    candidate,
    init,
    offer,
    single_forward,
    single_send,
)


@pytest.fixture
def node() -> Router:
    router = Router(registry=ClusterRegistry("n1"))
    for conn, path in ((A1, REG), (A2, REG), (O1, OFF), (O2, OFF)):
        router.connect(conn, path)
    return router


def claim_of(actions: list[object]) -> Claim:
    assert len(actions) == 1 and isinstance(actions[0], Claim), actions
    return actions[0]


def register(router: Router, conn: int, peer_id: str) -> None:
    claim = claim_of(router.receive(conn, init(peer_id)))
    assert (claim.kind, claim.peer_id) == (ANSWER, peer_id)
    assert single_send(router.claimed(claim, CLAIMED), conn) == (Command.INIT_RESPONSE, OK)


def test_init_is_claimed_in_the_cluster_before_the_id_is_registered(node: Router) -> None:
    """Init returns a Claim; only once CLAIMED is the ID registered and acked."""
    claim = claim_of(node.receive(A1, init("bob")))
    assert node.answer_peers() == []
    assert single_send(node.claimed(claim, CLAIMED), A1) == (Command.INIT_RESPONSE, OK)
    assert node.answer_peers() == ["bob"]


def test_a_second_claim_of_an_id_being_claimed_gets_409_at_once(node: Router) -> None:
    """Two connections of one node claiming one ID: the second gets 409 without a claim."""
    claim_of(node.receive(A1, init("bob")))
    assert single_send(node.receive(A2, init("bob")), A2) == (Command.INIT_RESPONSE, CONFLICT)


def test_taken_elsewhere_is_409_and_unavailable_is_503(node: Router) -> None:
    """TAKEN (another node holds it): 409; UNAVAILABLE (Redis down): 503."""
    claim = claim_of(node.receive(A1, init("bob")))
    assert single_send(node.claimed(claim, TAKEN), A1) == (Command.INIT_RESPONSE, CONFLICT)
    claim = claim_of(node.receive(A2, init("carol")))
    assert single_send(node.claimed(claim, UNAVAILABLE), A2) == (Command.INIT_RESPONSE, 503)
    assert node.answer_peers() == []


def test_an_offer_peer_binds_locally_when_redis_is_unavailable(node: Router) -> None:
    """A new caller of a peer on this node is served while Redis is down."""
    register(node, A1, "bob")
    claim = claim_of(node.receive(O1, offer("alice", "bob")))
    assert (claim.kind, claim.peer_id) == (OFFER, "alice")
    assert single_forward(node.claimed(claim, UNAVAILABLE)).target == A1
    assert node.offer_peers() == ["alice"]


def test_a_target_on_no_local_connection_is_a_remote_forward(node: Router) -> None:
    """An Offer to an ID that is not here goes to the cluster, frame untouched."""
    claim = claim_of(node.receive(O1, offer("alice", "bob")))
    (action,) = node.claimed(claim, CLAIMED)
    assert isinstance(action, RemoteForward)
    assert (action.kind, action.source_id, action.target_id, action.node) == (
        ANSWER,
        "alice",
        "bob",
        None,
    )
    assert action.frame == offer("alice", "bob")
    ack = node.remote_result(O1, action.reply, False, OK, "bob")
    assert single_send([ack], O1) == (Command.OFFER_RESPONSE, OK)
    gone = node.remote_result(O1, action.reply, False, NOT_FOUND, "bob")
    assert single_send([gone], O1) == (Command.OFFER_RESPONSE, NOT_FOUND)


def test_answers_go_back_only_to_a_remote_caller(node: Router) -> None:
    """bob (here) may answer alice (node n2) once her Offer came from n2, and
    it goes straight to n2; mallory (here) answering alice gets 403."""
    register(node, A1, "bob")
    register(node, A2, "mallory")
    assert single_send(node.receive(A1, answer("bob", "alice")), A1)[1] == FORBIDDEN
    assert node.deliver_remote("n2", ANSWER, "alice", "bob") == (A1, OK)
    (action,) = node.receive(A1, answer("bob", "alice"))
    assert isinstance(action, RemoteForward)
    assert (action.kind, action.node, action.target_id) == (OFFER, "n2", "alice")
    assert single_send(node.receive(A2, answer("mallory", "alice")), A2)[1] == FORBIDDEN
    assert single_send(node.receive(A2, candidate("mallory", "alice")), A2)[1] == FORBIDDEN


def test_remote_frames_for_a_local_offer_peer_need_its_call(node: Router) -> None:
    """A frame from another node reaches a local offer peer only from the
    answer peer it called (403 otherwise); an unknown target is 404."""
    claim = claim_of(node.receive(O1, offer("alice", "bob")))
    node.claimed(claim, CLAIMED)
    assert node.deliver_remote("n2", OFFER, "bob", "alice") == (O1, OK)
    assert node.deliver_remote("n2", OFFER, "mallory", "alice") == (None, FORBIDDEN)
    assert node.deliver_remote("n2", ANSWER, "alice", "nobody") == (None, NOT_FOUND)


def test_ids_are_freed_when_their_peers_leave_but_held_ids_stay(node: Router) -> None:
    """take_freed lists what to release in Redis: a departed peer's IDs; a
    resume-held ID only once its grace period ends."""
    register(node, A1, "bob")
    claim = claim_of(node.receive(O1, offer("alice", "bob")))
    node.claimed(claim, CLAIMED)
    node.disconnect(O1)
    node.disconnect(A1)
    assert sorted(node.take_freed()) == [(ANSWER, "bob"), (OFFER, "alice")]
    node.connect(21, REG, resume="key")
    register(node, 21, "carol")
    held = node.disconnect(21)
    assert held is not None and node.take_freed() == []
    assert node.local_ids() == [(ANSWER, "carol", "key")]
    node.release(held)
    assert node.take_freed() == [(ANSWER, "carol")]


def test_an_id_the_server_made_up_binds_without_a_claim(node: Router) -> None:
    """LOCAL (a WHEP player's virtual offer peer): bound on this node at once."""
    register(node, A1, "bob")
    claim = claim_of(node.receive(O1, offer("whep-1", "bob")))
    assert single_forward(node.claimed(claim, LOCAL)).target == A1
