"""The room mesh state machine (peers/mesh.py) and the timer's completion
tally (peers/tally.py): pure, no network."""

from __future__ import annotations

import itertools

from rtc_signal.peers.mesh import (
    MAX_ATTEMPTS,
    MAX_EARLY_CANDIDATES,
    AcceptOffer,
    Action,
    AddCandidate,
    ApplyAnswer,
    CloseLink,
    MakeOffer,
    Mesh,
    Notice,
    Notify,
)
from rtc_signal.peers.tally import Tally

OFFER = b'{"type":"offer","sdp":"v=0"}'
ANSWER = b'{"type":"answer","sdp":"v=0"}'


def offers(actions: list[Action]) -> list[str]:
    return [a.member for a in actions if isinstance(a, MakeOffer)]


def test_joiner_offers_to_every_member_already_there_in_order() -> None:
    """After our Join, we make one offer to each listed member, oldest first."""
    mesh = Mesh("c")
    actions = mesh.joined(["a", "b"])
    assert offers(actions) == ["a", "b"]
    assert len({a.link for a in actions if isinstance(a, MakeOffer)}) == 2
    assert mesh.present() == ["a", "b"]


def test_own_id_and_duplicates_in_the_member_list_get_no_offer() -> None:
    mesh = Mesh("c")
    assert offers(mesh.joined(["a", "c", "a", ""])) == ["a"]


def test_a_member_joining_after_us_gets_no_offer_we_wait_for_its_offer() -> None:
    """No glare: on presence join the earlier member only notes the newcomer."""
    mesh = Mesh("a")
    mesh.joined([])
    assert mesh.member_joined("b") == [Notify("b", Notice.JOINED)]
    actions = mesh.offer_received("b", OFFER)
    assert actions == [AcceptOffer("b", actions[0].link, OFFER)]  # type: ignore[union-attr]


def test_no_pair_ever_offers_both_ways() -> None:
    """Simulated joins in every order: exactly one side of each pair offers."""
    for order in itertools.permutations("abcd"):
        meshes: dict[str, Mesh] = {}
        offered: set[tuple[str, str]] = set()
        for newcomer in order:
            for name, mesh in meshes.items():
                mesh.member_joined(newcomer)
                assert newcomer in mesh.present(), name
            mesh = meshes[newcomer] = Mesh(newcomer)
            for target in offers(mesh.joined(list(meshes)[:-1])):
                offered.add((newcomer, target))
        for x, y in itertools.combinations("abcd", 2):
            assert ((x, y) in offered) != ((y, x) in offered), (order, x, y)


def test_an_offer_from_a_member_we_offer_to_is_ignored() -> None:
    """The earlier member never offers; answering would make a second connection."""
    mesh = Mesh("c")
    mesh.joined(["a"])
    assert mesh.offer_received("a", OFFER) == []


def test_answer_goes_to_the_offering_link_once() -> None:
    mesh = Mesh("c")
    (offer,) = mesh.joined(["a"])
    assert isinstance(offer, MakeOffer)
    assert mesh.answer_received("a", ANSWER) == [ApplyAnswer("a", offer.link, ANSWER)]
    assert mesh.answer_received("a", ANSWER) == []  # a second answer: ignored
    assert mesh.answer_received("zz", ANSWER) == []  # from a stranger: ignored


def test_candidates_before_the_offer_are_kept_and_follow_it() -> None:
    """A browser's trickled candidates can come before its offer: held, bounded."""
    mesh = Mesh("a")
    mesh.joined([])
    mesh.member_joined("b")
    for n in range(MAX_EARLY_CANDIDATES + 5):
        assert mesh.candidate_received("b", f"candidate:{n}".encode()) == []
    actions = mesh.offer_received("b", OFFER)
    accept = actions[0]
    assert isinstance(accept, AcceptOffer)
    added = [a for a in actions if isinstance(a, AddCandidate)]
    assert len(added) == MAX_EARLY_CANDIDATES
    assert all(a.link == accept.link for a in added)
    assert mesh.candidate_received("b", b"x") == [AddCandidate("b", accept.link, b"x")]


def test_leave_closes_the_connection_and_notifies() -> None:
    mesh = Mesh("c")
    (offer,) = mesh.joined(["a"])
    assert isinstance(offer, MakeOffer)
    mesh.link_open("a", offer.link)
    assert mesh.member_left("a") == [CloseLink("a", offer.link), Notify("a", Notice.LEFT)]
    assert mesh.present() == []
    assert mesh.member_left("a") == []  # twice: nothing


def test_rejoin_under_the_same_id_gets_a_fresh_connection() -> None:
    """A member that left and comes back is a newcomer: it offers on a new link,
    and events of its old connection no longer touch anything."""
    mesh = Mesh("a")
    mesh.joined([])
    mesh.member_joined("b")
    first = mesh.offer_received("b", OFFER)[0]
    assert isinstance(first, AcceptOffer)
    assert mesh.link_open("b", first.link) == [Notify("b", Notice.CONNECTED)]
    mesh.member_left("b")
    mesh.member_joined("b")
    second = mesh.offer_received("b", OFFER)[0]
    assert isinstance(second, AcceptOffer)
    assert second.link != first.link
    assert mesh.link_failed("b", first.link) == []  # the old link's late failure
    assert mesh.link_closed("b", first.link) == []
    assert mesh.link_open("b", second.link) == [Notify("b", Notice.CONNECTED)]
    assert mesh.connected() == ["b"]


def test_a_new_offer_from_a_connected_member_replaces_its_connection() -> None:
    mesh = Mesh("a")
    mesh.joined([])
    mesh.member_joined("b")
    first = mesh.offer_received("b", OFFER)[0]
    assert isinstance(first, AcceptOffer)
    actions = mesh.offer_received("b", OFFER)
    assert actions[0] == CloseLink("b", first.link)
    assert isinstance(actions[1], AcceptOffer) and actions[1].link != first.link


def test_offerer_retries_a_failed_connection_a_bounded_number_of_times() -> None:
    mesh = Mesh("c")
    (offer,) = mesh.joined(["a"])
    assert isinstance(offer, MakeOffer)
    link = offer.link
    for _ in range(MAX_ATTEMPTS - 1):
        actions = mesh.link_failed("a", link)
        assert actions[0] == CloseLink("a", link)
        assert isinstance(actions[1], MakeOffer)
        link = actions[1].link
    assert mesh.link_failed("a", link) == [CloseLink("a", link)]  # given up
    assert mesh.present() == ["a"]


def test_answerer_does_not_retry_and_a_clean_close_is_not_retried() -> None:
    mesh = Mesh("a")
    mesh.joined([])
    mesh.member_joined("b")
    accept = mesh.offer_received("b", OFFER)[0]
    assert isinstance(accept, AcceptOffer)
    assert mesh.link_failed("b", accept.link) == [CloseLink("b", accept.link)]
    mesh2 = Mesh("c")
    (offer,) = mesh2.joined(["a"])
    assert isinstance(offer, MakeOffer)
    mesh2.link_open("a", offer.link)
    assert mesh2.link_closed("a", offer.link) == [CloseLink("a", offer.link)]


def test_an_offer_from_an_unannounced_member_is_a_newcomer() -> None:
    mesh = Mesh("a")
    mesh.joined([])
    actions = mesh.offer_received("x", OFFER)
    assert actions[0] == Notify("x", Notice.JOINED)
    assert isinstance(actions[1], AcceptOffer)


def test_leaving_closes_every_connection() -> None:
    mesh = Mesh("c")
    actions = mesh.joined(["a", "b"])
    links = {a.link for a in actions if isinstance(a, MakeOffer)}
    closed = mesh.leave()
    assert {a.link for a in closed if isinstance(a, CloseLink)} == links
    assert mesh.present() == []


# -- the timer's tally -----------------------------------------------------------------


def test_tally_needs_n_both_ways_with_every_present_member() -> None:
    tally = Tally(2, 1, ["a", "b"])
    for member in ("a", "b"):
        tally.connected(member)
        tally.sent(member)
        tally.sent(member)
        tally.received(member)
    assert not tally.done()
    tally.received("a")
    assert not tally.done()  # b still owes one
    tally.received("b")
    assert tally.done()


def test_tally_waits_for_expect_members_when_alone() -> None:
    tally = Tally(1, 2)
    assert not tally.done()
    tally.connected("a")
    tally.sent("a")
    tally.received("a")
    assert not tally.done()
    tally.joined("b")
    assert not tally.done()
    tally.connected("b")
    tally.sent("b")
    tally.received("b")
    assert tally.done()


def test_tally_drops_a_member_that_leaves_but_reports_it_unfinished() -> None:
    tally = Tally(3, 1, ["a", "b"])
    tally.connected("a")
    for _ in range(3):
        tally.sent("a")
        tally.received("a")
    tally.connected("b")
    tally.sent("b")
    unfinished = tally.left("b")
    assert unfinished is not None and (unfinished.sent, unfinished.received) == (1, 0)
    assert tally.done()
    assert tally.left("a") is None  # finished before leaving


def test_tally_a_new_connection_starts_the_counts_again() -> None:
    tally = Tally(1, 1)
    tally.connected("a")
    tally.sent("a")
    tally.received("a")
    assert tally.done()
    tally.connected("a")  # rejoined
    assert not tally.done()
