"""Rooms across a cluster: two signaling nodes in this process on one real
redis-server, raw clients on ``/room``. Members on different nodes see each
other (members list, join and leave), relays cross nodes verbatim to the
addressed member only, call integrity, the size limit and member IDs hold
cluster-wide, and a dead node's members leave."""

from __future__ import annotations

from rtc_signal.proto import Command, decode, encode_request
from rtc_signal.proto.rooms import Presence, parse_presence
from rtc_signal.signaling.actions import ROOM, Path, RemoteForward, RoomClaim, RoomLeft, Send
from rtc_signal.signaling.cluster import ROOM_JOIN
from rtc_signal.signaling.registry import ClusterRegistry
from rtc_signal.signaling.router import NOT_FOUND, Router
from tests.conftest import (
    answer_frame,
    candidate_frame,
    client,
    eventually,
    expect_response,
    offer_frame,
    recv_frame,
    run,
)
from tests.redisserver import RedisServer
from tests.test_cluster import no_frame, nodes
from tests.test_server_rooms import join, members, recv_presence


def test_members_on_two_nodes_see_each_other_join_and_leave(redis_server: RedisServer) -> None:
    """a (node 1), b (node 2), c (node 1) join r1: each gets the members before
    it, oldest first, whatever their node; the earlier ones see each join;
    b leaving (command 7) is seen by a and c on node 1."""

    async def scenario() -> None:
        async with (
            nodes(redis_server) as (n1, n2),
            client(n1.url, "/room") as a,
            client(n2.url, "/room") as b,
            client(n1.url, "/room") as c,
        ):
            assert await join(a, "a", "r1") == ()
            assert await join(b, "b", "r1") == ("a",)
            assert await recv_presence(a) == ("b", "a", Presence("r1", "join", member="b"))
            assert await join(c, "c", "r1") == ("a", "b")
            assert await recv_presence(a) == ("c", "a", Presence("r1", "join", member="c"))
            assert await recv_presence(b) == ("c", "b", Presence("r1", "join", member="c"))
            await b.send(encode_request(Command.LEAVE, "b", "r1"))
            await expect_response(b, Command.LEAVE_RESPONSE, 0)
            assert await recv_presence(a) == ("b", "a", Presence("r1", "leave", member="b"))
            assert await recv_presence(c) == ("b", "c", Presence("r1", "leave", member="b"))
            assert redis_server.command("HKEYS", "rtc:room:r1").split() == ["a", "c"]
            # b may join again, now the newest
            assert await join(b, "b", "r1") == ("a", "c")

    run(scenario())


def test_room_members_are_put_back_after_a_redis_restart(redis_server: RedisServer) -> None:
    """a (node 1) and b (node 2) in r1; Redis restarts empty: once the nodes
    are back, Redis lists both again, a newcomer c gets [a, b] and both see
    it join, b's ID in r1 is still taken (409), and a relay a -> b crosses."""

    async def scenario() -> None:
        async with nodes(redis_server) as (n1, n2), members([n1.url, n2.url], "a", "b") as (a, b):
            redis_server.stop()
            await eventually(lambda: not n1.cluster.ready and not n2.cluster.ready)  # type: ignore[union-attr]
            redis_server.start()
            await eventually(lambda: n1.cluster.ready and n2.cluster.ready, timeout=10)  # type: ignore[union-attr]
            assert sorted(redis_server.command("HKEYS", "rtc:room:r1").split()) == ["a", "b"]
            async with client(n1.url, "/room") as c, client(n2.url, "/room") as thief:
                assert await join(c, "c", "r1") == ("a", "b")
                assert await recv_presence(a) == ("c", "a", Presence("r1", "join", member="c"))
                assert await recv_presence(b) == ("c", "b", Presence("r1", "join", member="c"))
                assert await join(thief, "b", "r1", code=409) == ()
            for ws, name in ((a, "a"), (b, "b")):  # c closed: it left
                assert await recv_presence(ws) == ("c", name, Presence("r1", "leave", member="c"))
            sent = encode_request(Command.OFFER, "b", "a", b'{"type":"offer","sdp":""}')
            await b.send(sent)  # b joined later: b offers
            assert await recv_frame(a) == sent
            await expect_response(b, Command.OFFER_RESPONSE, 0)

    run(scenario(), 60)


def test_a_relay_across_nodes_reaches_only_the_addressed_member(
    redis_server: RedisServer,
) -> None:
    """b (node 2) offers to a (node 1), a answers, both trickle candidates:
    every frame arrives byte for byte, each sender gets 0, and c (node 1)
    and d (node 2) receive nothing."""

    async def scenario() -> None:
        async with (
            nodes(redis_server) as (n1, n2),
            members((n1.url, n2.url, n1.url, n2.url), "a", "b", "c", "d") as (a, b, c, d),
        ):
            for sender, receiver, frame, reply in (
                (b, a, candidate_frame("b", "a"), Command.CANDIDATE_RESPONSE),  # before its Offer
                (b, a, offer_frame("b", "a"), Command.OFFER_RESPONSE),
                (a, b, answer_frame("a", "b"), Command.ANSWER_RESPONSE),
                (a, b, candidate_frame("a", "b"), Command.CANDIDATE_RESPONSE),
                (b, a, candidate_frame("b", "a", 50001).decode(), Command.CANDIDATE_RESPONSE),
            ):
                await sender.send(frame)
                assert await recv_frame(receiver) == frame
                await expect_response(sender, reply, 0, binary=isinstance(frame, bytes))
            await no_frame(c)
            await no_frame(d)

    run(scenario())


def test_a_forged_answer_or_candidate_across_nodes_gets_403(redis_server: RedisServer) -> None:
    """Nobody offered: a's (node 1) Answer to b (node 2) and a's Candidate to
    the later joiner b get 403 and never reach b; c (node 2) cannot answer
    a's offer to b; b's genuine answer then goes through."""

    async def scenario() -> None:
        async with (
            nodes(redis_server) as (n1, n2),
            members((n1.url, n2.url, n2.url), "a", "b", "c") as (a, b, c),
        ):
            await a.send(answer_frame("a", "b"))
            await expect_response(a, Command.ANSWER_RESPONSE, 403)
            await a.send(candidate_frame("a", "b"))  # a joined first: it is not b's offerer
            await expect_response(a, Command.CANDIDATE_RESPONSE, 403)
            await a.send(offer_frame("a", "b"))
            await expect_response(a, Command.OFFER_RESPONSE, 0)
            assert await recv_frame(b) == offer_frame("a", "b")
            await c.send(answer_frame("c", "a"))
            await expect_response(c, Command.ANSWER_RESPONSE, 403)
            await b.send(answer_frame("b", "a"))
            await expect_response(b, Command.ANSWER_RESPONSE, 0)
            assert await recv_frame(a) == answer_frame("b", "a")
            await no_frame(a)

    run(scenario())


def test_room_size_and_member_ids_hold_across_nodes(redis_server: RedisServer) -> None:
    """--max-room-size 2 on both nodes: a on node 1, b on node 2, then c on
    node 1 gets 503; an ID taken in the room on node 1 gets 409 on node 2
    (but is free in another room); once a member leaves, c gets in."""

    async def scenario() -> None:
        async with (
            nodes(redis_server, max_room_size=2) as (n1, n2),
            client(n1.url, "/room") as a,
            client(n2.url, "/room") as b,
            client(n1.url, "/room") as c,
            client(n2.url, "/room") as twin,
        ):
            assert await join(a, "a", "r1") == ()
            assert await join(twin, "a", "r1", code=409) == ()
            assert await join(b, "b", "r1") == ("a",)
            assert await recv_presence(a) == ("b", "a", Presence("r1", "join", member="b"))
            await join(c, "c", "r1", code=503)
            assert await join(twin, "a", "r2") == ()
            await b.close()
            assert await recv_presence(a) == ("b", "a", Presence("r1", "leave", member="b"))
            assert await join(c, "c", "r1") == ("a",)

    run(scenario())


def test_a_closed_member_on_node_1_is_seen_leaving_on_node_2(redis_server: RedisServer) -> None:
    """a's connection (node 1) closes: b (node 2) gets Presence leave, the
    room's Redis keys go, and a relay to a from b gets 404."""

    async def scenario() -> None:
        async with (
            nodes(redis_server) as (n1, n2),
            client(n1.url, "/room") as a,
            client(n2.url, "/room") as b,
        ):
            assert await join(a, "a", "r1") == ()
            assert await join(b, "b", "r1") == ("a",)
            await a.close()
            assert await recv_presence(b) == ("a", "b", Presence("r1", "leave", member="a"))
            await b.send(offer_frame("b", "a"))
            await expect_response(b, Command.OFFER_RESPONSE, 404)
            await b.close()
            await eventually(lambda: redis_server.command("EXISTS", "rtc:room:r1") == "0")

    run(scenario())


def test_the_members_of_a_dead_node_leave_within_the_liveness_bound(
    redis_server: RedisServer,
) -> None:
    """A node that stops without a word (SIGKILL: its heartbeat key expires,
    nothing cleans up) had member g in r1: a on node 1 sees g leave once the
    heartbeat expires and a live node sweeps it, and g's ID is free again."""

    async def scenario() -> None:
        async with nodes(redis_server) as (n1, n2), client(n1.url, "/room") as a:
            redis_server.command("SET", "rtc:alive:ghost", "1", "PX", "1500")
            redis_server.command("SADD", "rtc:nodes", "ghost")
            redis_server.command("EVAL", ROOM_JOIN, "0", "r1", "g", "ghost", "16")
            assert await join(a, "a", "r1") == ("g",)
            # bounded by the TTL (1.5 s) and five 0.2 s heartbeats, within the wait
            assert await recv_presence(a) == ("g", "a", Presence("r1", "leave", member="g"))
            async with client(n2.url, "/room") as g:
                assert await join(g, "g", "r1") == ("a",)

    run(scenario())


def _room_node() -> Router:
    router = Router(registry=ClusterRegistry("n1"))
    router.connect(1, Path.ROOM)
    router.connect(2, Path.ROOM)
    return router


def _presence_of(action: object) -> Presence:
    assert isinstance(action, Send) and action.notice, action
    frame = action.frame
    return parse_presence(decode(frame).request.body)


def test_a_leave_that_overtakes_the_join_answer_is_not_lost() -> None:
    """(sans-I/O) g on node n9 leaves r1 while a's Join is in Redis: the bus
    brings the leave before the Join's answer, which still lists g; a's
    members list leaves g out, and a relay to g is 404, not a stale forward."""
    router = _room_node()
    (claim,) = router.receive(1, encode_request(Command.JOIN, "a", "r1"))
    assert isinstance(claim, RoomClaim)
    assert router.room_presence("leave", "r1", "g", "n9", 0) == []
    actions = router.room_claimed(claim, (7, [("g", "n9", 3)]))
    assert _presence_of(actions[1]) == Presence("r1", "members", members=())
    (refusal,) = router.receive(1, offer_frame("a", "g"))
    assert isinstance(refusal, Send)
    assert decode(refusal.frame).response.code == NOT_FOUND


def test_a_join_that_overtakes_the_join_answer_is_listed_in_order() -> None:
    """(sans-I/O) h (n9) joins after a's Join ran in Redis but its Presence
    comes first: a's members list has the older f then h, by join seq, and a's
    relays to both go to node n9 (RemoteForward); a's place is freed on leave."""
    router = _room_node()
    (claim,) = router.receive(1, encode_request(Command.JOIN, "a", "r1"))
    assert isinstance(claim, RoomClaim)
    assert router.room_presence("join", "r1", "h", "n9", 9) == []  # (nobody here yet)
    actions = router.room_claimed(claim, (7, [("f", "n9", 3)]))
    assert _presence_of(actions[1]) == Presence("r1", "members", members=("f", "h"))
    for target in ("f", "h"):
        (forward,) = router.receive(1, offer_frame("a", target))
        assert isinstance(forward, RemoteForward) and forward.node == "n9"
        assert (forward.kind, forward.target_id) == (ROOM, f"r1\n{target}")
    assert router.leave_room(1) == [RoomLeft("r1", "a")]
