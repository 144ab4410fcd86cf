"""Handing /offer connections between linked worker nodes (signaling/handover.py):
two nodes on one real redis-server in this process, joined by a real
SOCK_SEQPACKET link as ``--workers`` joins them. The offer peer connects to
node 1, its target is on node 2: the connection moves to node 2 and the whole
call is local there; refusals keep their codes; a sibling that is full
declines and the call goes through Redis as before."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from rtc_signal.proto import Command
from rtc_signal.proto import tokens as token_codec
from rtc_signal.signaling.handover import (
    Handover,
    client_frame,
    decode,
    encode_handover,
    encode_reply,
    format_links,
    parse_links,
    pending_bytes,
)
from rtc_signal.signaling.server import SignalingServer
from tests.conftest import (
    answer_frame,
    candidate_frame,
    client,
    eventually,
    expect_response,
    offer_frame,
    recv_frame,
    register,
    run,
    running_server,
)
from tests.redisserver import RedisServer
from tests.test_cluster import NODE_SETTINGS, no_frame
from tests.test_metrics import scrape, value

SECRET = b"k" * 32


@contextlib.asynccontextmanager
async def linked_nodes(
    redis: RedisServer, second: dict[str, Any] | None = None, **settings: Any
) -> AsyncIterator[tuple[SignalingServer, SignalingServer]]:
    """Nodes n1 and n2 of one cluster, linked as two ``--workers`` are."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    common = {"redis_url": redis.url, **NODE_SETTINGS, **settings}
    async with (
        running_server(node_id="n1", sibling_links=(("n2", a.detach()),), **common) as n1,
        running_server(
            node_id="n2", sibling_links=(("n1", b.detach()),), **{**common, **(second or {})}
        ) as n2,
    ):
        yield n1, n2


async def relayed(sender: Any, receiver: Any, frame: bytes, reply: Command) -> None:
    """``frame`` from ``sender`` reaches ``receiver`` verbatim; ``sender`` gets 0."""
    await sender.send(frame)
    assert await recv_frame(receiver) == frame
    await expect_response(sender, reply, 0)


def moved(server: SignalingServer) -> tuple[int, int]:
    """(connections moved out, moved in), the counters /metrics exports."""
    return server.counters.moved["out"], server.counters.moved["in"]


# -- the messages (pure) -----------------------------------------------------------


def test_a_handover_message_round_trips_with_its_grant_and_bytes() -> None:
    """Header fields and the held bytes survive encode/decode; replies too."""
    handover = Handover(7, "/offer", "alice", None, b"\x81\x80\0\0\0\0" + b"\xff" * 3)
    assert decode(encode_handover(handover)) == handover
    assert decode(encode_reply(7, True)) == (7, True)
    assert decode(encode_reply(8, False)) == (8, False)
    with pytest.raises(ValueError):
        decode(b"Xjunk")
    with pytest.raises(ValueError):
        decode(b'H[1,"/offer",5,null]\n')


def test_held_messages_are_framed_again_as_a_client_sends_them() -> None:
    """Masked (zero key) client frames of each size class, text and binary,
    then the incomplete frame's bytes as they came."""
    for size in (0, 125, 126, 65535, 65536):
        frame = client_frame(b"x" * size)
        assert frame[0] == 0x82 and frame[1] & 0x80
        assert frame.endswith(b"\0\0\0\0" + b"x" * size)
    assert client_frame("hé")[:2] == bytes((0x81, 0x80 | 3))
    assert pending_bytes(["a", b"b"], b"\x82") == client_frame("a") + client_frame(b"b") + b"\x82"


def test_sibling_links_option_round_trips_and_refuses_junk() -> None:
    links = {"host-1-1": 5, "host-1-2": 7}
    assert parse_links(format_links(links)) == links
    assert parse_links("") == {}
    for bad in ("n1", "n1=x", "=5"):
        with pytest.raises(ValueError):
            parse_links(bad)


# -- real servers ---------------------------------------------------------------------


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_an_offer_connection_moves_to_the_worker_of_its_target(
    redis_server: RedisServer, loop: str
) -> None:
    """alice connects to n1 and calls bob on n2: her connection moves to n2
    (her offer ID is claimed by n2), every frame of the call flows both ways
    and is acked, and nothing crosses Redis after the move."""

    async def scenario() -> None:
        async with (
            linked_nodes(redis_server) as (n1, n2),
            client(n2.url, "/register") as bob,
            client(n1.url, "/offer") as alice,
        ):
            await register(bob, "bob")
            await relayed(alice, bob, offer_frame("alice", "bob"), Command.OFFER_RESPONSE)
            assert moved(n1) == (1, 0) and moved(n2) == (0, 1)
            assert redis_server.command("GET", "rtc:offer:alice").split()[0] == "n2"
            assert n2.cluster is not None
            bus_before = n2.cluster.stats.messages_in + n2.cluster.stats.messages_out
            for frame, sender, receiver, reply in (
                (answer_frame("bob", "alice"), bob, alice, Command.ANSWER_RESPONSE),
                (candidate_frame("bob", "alice"), bob, alice, Command.CANDIDATE_RESPONSE),
                (candidate_frame("alice", "bob"), alice, bob, Command.CANDIDATE_RESPONSE),
            ):
                await relayed(sender, receiver, frame, reply)
            assert n2.cluster.stats.messages_in + n2.cluster.stats.messages_out == bus_before
            assert len(n1.router) == 0, "n1 still holds the connection"
            name = "rtc_signal_connections_moved_total"
            assert value(await scrape(n1.url), name, direction="out") == 1
            assert value(await scrape(n2.url), name, direction="in") == 1

    run(scenario(), loop=loop)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_frames_sent_together_with_the_first_offer_all_arrive_in_order(
    redis_server: RedisServer, loop: str
) -> None:
    """An offer and 20 candidates written at once (one read on n1, held while
    n1 looks bob up) reach bob in order through the move, each acked once."""

    async def scenario() -> None:
        async with (
            linked_nodes(redis_server) as (n1, n2),
            client(n2.url, "/register") as bob,
            client(n1.url, "/offer") as alice,
        ):
            await register(bob, "bob")
            frames = [offer_frame("alice", "bob")] + [
                candidate_frame("alice", "bob", 50000 + i) for i in range(20)
            ]
            alice.transport.write(b"".join(client_frame(f) for f in frames))  # one write
            for frame in frames:
                assert await recv_frame(bob) == frame
            await expect_response(alice, Command.OFFER_RESPONSE, 0)
            for _ in range(20):
                await expect_response(alice, Command.CANDIDATE_RESPONSE, 0)
            await no_frame(alice)
            assert moved(n1) == (1, 0)

    run(scenario(), loop=loop)


def test_a_token_grant_moves_with_the_connection(redis_server: RedisServer) -> None:
    """alice's token grants 'alice' only: an offer as 'mallory' moved to n2
    is refused there with 403 and never reaches bob (the canary call after
    it, as alice on a new connection, completes)."""

    async def scenario() -> None:
        async with linked_nodes(redis_server, secret=SECRET) as (n1, n2):
            expires = int(time.time()) + 600
            bob_token = token_codec.mint(SECRET, "bob", expires)
            alice_token = token_codec.mint(SECRET, "alice", expires)
            async with (
                client(n2.url, f"/register?token={bob_token}") as bob,
                client(n1.url, f"/offer?token={alice_token}") as liar,
            ):
                await register(bob, "bob")
                await liar.send(offer_frame("mallory", "bob"))
                await expect_response(liar, Command.OFFER_RESPONSE, 403)
                await no_frame(bob)
                assert moved(n1) == (1, 0)
                async with client(n1.url, f"/offer?token={alice_token}") as alice:
                    frame = offer_frame("alice", "bob")
                    await relayed(alice, bob, frame, Command.OFFER_RESPONSE)

    run(scenario())


def test_a_full_sibling_declines_and_the_call_goes_through_redis(
    redis_server: RedisServer,
) -> None:
    """n2 at its connection limit (bob alone) declines alice's connection:
    n1 keeps it, forwards through Redis, and the call works both ways."""

    async def scenario() -> None:
        async with (
            linked_nodes(redis_server, second={"max_connections": 1}) as (n1, n2),
            client(n2.url, "/register") as bob,
            client(n1.url, "/offer") as alice,
        ):
            await register(bob, "bob")
            await relayed(alice, bob, offer_frame("alice", "bob"), Command.OFFER_RESPONSE)
            await relayed(bob, alice, answer_frame("bob", "alice"), Command.ANSWER_RESPONSE)
            assert moved(n1) == (0, 0) and moved(n2) == (0, 0)
            assert redis_server.command("GET", "rtc:offer:alice").split()[0] == "n1"

    run(scenario())


def test_connections_that_must_stay_do_not_move(redis_server: RedisServer) -> None:
    """Nothing moves for: a target on this node, an unknown target (404 from
    here), a first frame that is not an Offer (refused here), a /register
    connection."""

    async def scenario() -> None:
        async with (
            linked_nodes(redis_server) as (n1, n2),
            client(n1.url, "/register") as carol,
            client(n2.url, "/register") as bob,
            client(n1.url, "/offer") as local,
            client(n1.url, "/offer") as lost,
            client(n1.url, "/offer") as odd,
        ):
            await register(carol, "carol")
            await register(bob, "bob")
            await local.send(offer_frame("l", "carol"))
            assert await recv_frame(carol) == offer_frame("l", "carol")
            await expect_response(local, Command.OFFER_RESPONSE, 0)
            await lost.send(offer_frame("x", "nobody"))
            await expect_response(lost, Command.OFFER_RESPONSE, 404)
            await odd.send(answer_frame("o", "bob"))  # bob is on n2: no matter
            await expect_response(odd, Command.ANSWER_RESPONSE, 403)
            await eventually(lambda: len(n1.router) == 4)
            assert moved(n1) == (0, 0) and moved(n2) == (0, 0)

    run(scenario())


def test_a_client_that_leaves_while_its_target_is_looked_up_is_let_go(
    redis_server: RedisServer,
) -> None:
    """Redis paused (CLIENT PAUSE) while n1 looks up alice's target; alice
    closes meanwhile: once Redis answers, n1 routes what she sent before she
    left (as any queued message: bob gets her Offer, through Redis) and lets
    her connection go (nothing left in its router); nothing moved."""

    async def scenario() -> None:
        async with (
            linked_nodes(redis_server) as (n1, n2),
            client(n2.url, "/register") as bob,
        ):
            await register(bob, "bob")
            async with client(n1.url, "/offer") as alice:
                redis_server.command("CLIENT", "PAUSE", "1500", "ALL")
                await alice.send(offer_frame("alice", "bob"))
                await asyncio.sleep(0.2)
            assert await recv_frame(bob, timeout=10) == offer_frame("alice", "bob")
            await eventually(lambda: len(n1.router) == 0, timeout=10)
            assert moved(n1) == (0, 0)

    run(scenario())
