"""Two signaling nodes on one real redis-server, in this process: IDs are
claimed cluster-wide, frames cross nodes verbatim, acks and refusals come back
right, and the call-integrity rules hold across nodes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from rtc_signal.proto import Command, encode_request
from rtc_signal.signaling.server import SignalingServer
from tests.conftest import (
    answer_frame,
    candidate_frame,
    client,
    connect,
    eventually,
    expect_response,
    offer_frame,
    recv_frame,
    register,
    run,
    running_server,
    within,
)
from tests.redisserver import RedisServer

NODE_SETTINGS = {"cluster_heartbeat": 0.2, "cluster_ttl": 1.0}


@contextlib.asynccontextmanager
async def nodes(
    redis: RedisServer, count: int = 2, **settings: Any
) -> AsyncIterator[list[SignalingServer]]:
    async with contextlib.AsyncExitStack() as stack:
        servers = [
            await stack.enter_async_context(
                running_server(
                    redis_url=redis.url, node_id=f"n{i + 1}", **NODE_SETTINGS, **settings
                )
            )
            for i in range(count)
        ]
        yield servers


async def no_frame(ws: object, timeout: float = 0.3) -> None:
    """Nothing arrives on ``ws`` for ``timeout`` seconds."""
    try:
        frame = await within(ws.recv(), timeout)  # type: ignore[attr-defined]
    except TimeoutError:
        return
    raise AssertionError(f"unexpected frame {frame!r}")


def test_a_call_across_two_nodes_relays_every_frame_verbatim(redis_server: RedisServer) -> None:
    """Offer from node 2 reaches bob on node 1 byte for byte; the Answer and
    Candidates travel back and both ways; each sender is acked with 0."""

    async def scenario() -> None:
        async with (
            nodes(redis_server) as (n1, n2),
            client(n1.url, "/register") as bob,
            client(n2.url, "/offer") as alice,
        ):
            await register(bob, "bob")
            sent = offer_frame("alice", "bob")
            await alice.send(sent)
            assert await recv_frame(bob) == sent
            await expect_response(alice, Command.OFFER_RESPONSE, 0)
            for frame, sender, receiver, reply in (
                (answer_frame("bob", "alice"), bob, alice, Command.ANSWER_RESPONSE),
                (candidate_frame("bob", "alice"), bob, alice, Command.CANDIDATE_RESPONSE),
                (candidate_frame("alice", "bob"), alice, bob, Command.CANDIDATE_RESPONSE),
            ):
                await sender.send(frame)
                assert await recv_frame(receiver) == frame
                await expect_response(sender, reply, 0)
            # text frames stay text frames across nodes
            text = candidate_frame("alice", "bob").decode()
            await alice.send(text)
            assert await recv_frame(bob) == text
            await expect_response(alice, Command.CANDIDATE_RESPONSE, 0, binary=False)
            assert n1.cluster is not None and n1.cluster.stats.messages_in >= 3
            assert n2.cluster is not None and n2.cluster.stats.messages_out >= 3

    run(scenario())


def test_an_id_taken_on_one_node_gets_409_on_the_other(redis_server: RedisServer) -> None:
    """Registered on node 1: 409 on node 2 (answer IDs and offer IDs alike);
    free again on every node once its peer leaves."""

    async def scenario() -> None:
        async with nodes(redis_server) as (n1, n2):
            async with client(n1.url, "/register") as bob:
                await register(bob, "bob")
                async with client(n2.url, "/register") as other:
                    await other.send(encode_request(Command.INIT, "bob", ""))
                    await expect_response(other, Command.INIT_RESPONSE, 409)
                async with client(n1.url, "/offer") as alice, client(n2.url, "/offer") as fake:
                    await alice.send(offer_frame("alice", "bob"))
                    await expect_response(alice, Command.OFFER_RESPONSE, 0)
                    await fake.send(offer_frame("alice", "bob"))
                    await expect_response(fake, Command.OFFER_RESPONSE, 409)
            await eventually(lambda: redis_server.command("EXISTS", "rtc:answer:bob") == "0")
            async with client(n2.url, "/register") as again:
                await register(again, "bob")

    run(scenario())


def test_a_forged_answer_from_a_peer_on_another_node_gets_403(redis_server: RedisServer) -> None:
    """alice (node 2) calls bob (node 1): mallory (node 1, and an offer peer on
    node 1) cannot answer alice or send her candidates; bob's call goes on."""

    async def scenario() -> None:
        async with (
            nodes(redis_server) as (n1, n2),
            client(n1.url, "/register") as bob,
            client(n1.url, "/register") as mallory,
            client(n2.url, "/offer") as alice,
        ):
            await register(bob, "bob")
            await register(mallory, "mallory")
            await alice.send(offer_frame("alice", "bob"))
            await recv_frame(bob)
            await expect_response(alice, Command.OFFER_RESPONSE, 0)
            await mallory.send(answer_frame("mallory", "alice"))
            await expect_response(mallory, Command.ANSWER_RESPONSE, 403)
            await mallory.send(candidate_frame("mallory", "alice"))
            await expect_response(mallory, Command.CANDIDATE_RESPONSE, 403)
            await no_frame(alice)
            frame = answer_frame("bob", "alice")
            await bob.send(frame)
            assert await recv_frame(alice) == frame
            await expect_response(bob, Command.ANSWER_RESPONSE, 0)

    run(scenario())


def test_an_unknown_or_departed_target_on_no_node_gets_404(redis_server: RedisServer) -> None:
    """An Offer to an ID no node holds gets 404; so does one to a peer that left."""

    async def scenario() -> None:
        async with nodes(redis_server) as (n1, n2), client(n2.url, "/offer") as alice:
            await alice.send(offer_frame("alice", "nobody"))
            await expect_response(alice, Command.OFFER_RESPONSE, 404)
            async with client(n1.url, "/register") as bob:
                await register(bob, "bob")
            await eventually(lambda: "bob" not in n1.router.answer_peers())
            await alice.send(offer_frame("alice", "bob"))
            await expect_response(alice, Command.OFFER_RESPONSE, 404)

    run(scenario())


def test_redis_lost_then_restarted(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis stops: calls within a node go on (new offer peers too), cross-node
    requests and new registrations get 503, each node logs it once. Redis
    comes back (empty): the nodes reconnect and claim their live peers again
    (no registered peer lost), and cross-node calls work again."""
    caplog.set_level(logging.INFO, logger="rtc_signal.signaling.cluster")

    async def scenario() -> float:
        async with (
            nodes(redis_server) as (n1, n2),
            client(n1.url, "/register") as bob,
            client(n2.url, "/register") as carol,
            client(n1.url, "/offer") as alice,
            client(n1.url, "/offer") as dave,
        ):
            await register(bob, "bob")
            await register(carol, "carol")
            for caller, name, callee, receiver in (
                (alice, "alice", "bob", bob),
                (dave, "dave", "carol", carol),
            ):
                await caller.send(offer_frame(name, callee))
                await recv_frame(receiver)
                await expect_response(caller, Command.OFFER_RESPONSE, 0)

            redis_server.stop()
            await eventually(lambda: not n1.cluster.ready and not n2.cluster.ready)  # type: ignore[union-attr]
            for _ in range(3):  # same node: goes on
                frame = candidate_frame("alice", "bob")
                await alice.send(frame)
                assert await recv_frame(bob) == frame
                await expect_response(alice, Command.CANDIDATE_RESPONSE, 0)
            async with client(n1.url, "/offer") as eve:  # a new caller, same node
                await eve.send(offer_frame("eve", "bob"))
                await recv_frame(bob)
                await expect_response(eve, Command.OFFER_RESPONSE, 0)
                for _ in range(5):  # cross-node: 503, frame after frame
                    await dave.send(candidate_frame("dave", "carol"))
                    await expect_response(dave, Command.CANDIDATE_RESPONSE, 503)
                async with client(n2.url, "/register") as newcomer:
                    await newcomer.send(encode_request(Command.INIT, "newcomer", ""))
                    await expect_response(newcomer, Command.INIT_RESPONSE, 503)
                await no_frame(carol)
                await asyncio.sleep(1.0)  # several reconnect attempts meanwhile

                redis_server.start()
                back = time.monotonic()
                await eventually(lambda: n1.cluster.ready and n2.cluster.ready, timeout=10)  # type: ignore[union-attr]
                recovered = time.monotonic() - back
                assert redis_server.command("GET", "rtc:answer:bob") == "n1 -"
                assert redis_server.command("GET", "rtc:answer:carol") == "n2 -"
                assert redis_server.command("GET", "rtc:offer:eve") == "n1 -"
                frame = candidate_frame("dave", "carol")
                await dave.send(frame)
                assert await recv_frame(carol) == frame
                await expect_response(dave, Command.CANDIDATE_RESPONSE, 0)
                async with client(n2.url, "/register") as thief:
                    await thief.send(encode_request(Command.INIT, "bob", ""))
                    await expect_response(thief, Command.INIT_RESPONSE, 409)
            return recovered

    recovered = run(scenario(), 60)
    lost = [r for r in caplog.records if "lost Redis" in r.getMessage()]
    assert sorted(r.getMessage().split()[1] for r in lost) == ["n1", "n2"], lost
    back = [r for r in caplog.records if "is back on Redis" in r.getMessage()]
    assert len(back) == 2
    print(f"nodes ready {recovered:.2f} s after Redis came back")


def test_a_dropped_answer_peer_resumes_on_another_node(redis_server: RedisServer) -> None:
    """bob (resume key K) drops from node 1, which holds his ID: another key
    gets 409 on node 2, key K takes the ID on node 2, and node 1 lets go of it."""

    async def scenario() -> None:
        async with nodes(redis_server) as (n1, n2):
            first = await connect(n1.url, "/register?resume=K")
            await register(first, "bob")
            first.transport.abort()  # dropped, not closed: node 1 holds the ID
            await eventually(lambda: n1.router.held_peers() == ["bob"])
            async with client(n2.url, "/register?resume=other") as thief:
                await thief.send(encode_request(Command.INIT, "bob", ""))
                await expect_response(thief, Command.INIT_RESPONSE, 409)
            async with client(n2.url, "/register?resume=K") as again:
                await register(again, "bob")
                await eventually(lambda: n1.router.held_peers() == [])
                assert redis_server.command("GET", "rtc:answer:bob").startswith("n2 ")
                async with client(n1.url, "/offer") as alice:  # reached from node 1
                    sent = offer_frame("alice", "bob")
                    await alice.send(sent)
                    assert await recv_frame(again) == sent
                    await expect_response(alice, Command.OFFER_RESPONSE, 0)

    run(scenario())


def test_a_burst_of_cross_node_frames_is_acked_frame_by_frame(redis_server: RedisServer) -> None:
    """200 Candidates sent at once across nodes: every one reaches bob, in
    order, and every one is acked with 0 (a reply that overtakes the sender's
    own PUBLISH result is not lost)."""

    async def scenario() -> None:
        async with (
            nodes(redis_server) as (n1, n2),
            client(n1.url, "/register") as bob,
            client(n2.url, "/offer") as alice,
        ):
            await register(bob, "bob")
            await alice.send(offer_frame("alice", "bob"))
            await recv_frame(bob)
            await expect_response(alice, Command.OFFER_RESPONSE, 0)
            frames = [candidate_frame("alice", "bob", port=40000 + i) for i in range(200)]
            for frame in frames:
                await alice.send(frame)
            for frame in frames:
                assert await recv_frame(bob) == frame
            for _ in frames:
                await expect_response(alice, Command.CANDIDATE_RESPONSE, 0, timeout=3)

    run(scenario())
