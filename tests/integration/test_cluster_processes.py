"""The cluster as real processes: ``rtc-signal serve --redis`` nodes on one real
redis-server, ``rtc-peer`` calls across nodes, a SIGKILLed node, Redis missing
at start, and ``--workers``."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time

from rtc_signal.proto import Command, encode_request
from rtc_signal.proto.rooms import Presence
from tests.conftest import (
    client,
    connect,
    expect_response,
    offer_frame,
    recv_frame,
    register,
    run,
    server_command,
    start_server_process,
    stop_server_process,
)
from tests.integration.procs import FAST, LOOPBACK, run_peer, start_peer, wait, wait_registered
from tests.redisserver import RedisServer, free_port
from tests.test_server_rooms import join, recv_presence

#: short heartbeats so that a dead node's IDs free in ~2 s (default: 5 s)
FAST_CLUSTER = ("--log-level", "info")


def node(redis: RedisServer, name: str, *extra: str) -> tuple[subprocess.Popen[str], str]:
    return start_server_process("--redis", redis.url, "--node-id", name, *FAST_CLUSTER, *extra)


def test_rtc_peer_answer_on_node_1_and_offer_on_node_2_complete_a_call(
    redis_server: RedisServer,
) -> None:
    """A real data-channel call whose signaling crosses nodes: 5 messages each way."""
    p1, url1 = node(redis_server, "n1")
    p2, url2 = node(redis_server, "n2")
    try:
        answer = start_peer("answer", "--id", "far", "--signal", url1, *LOOPBACK, *FAST)
        wait_registered(answer)
        offer = run_peer("offer", "--target", "far", "--signal", url2, *LOOPBACK, *FAST)
        answered = wait(answer)
    finally:
        stop_server_process(p1)
        stop_server_process(p2)
    assert offer.returncode == 0, offer.stderr
    assert answered.returncode == 0, answered.stderr
    assert offer.lines("recv ") == [f"recv answer-{n}" for n in range(1, 6)]
    assert answered.lines("recv ") == [f"recv offer-{n}" for n in range(1, 6)]


def test_a_sigkilled_nodes_ids_are_free_on_the_others_within_10_s(
    redis_server: RedisServer,
) -> None:
    """Node 1 holds "bob" and dies (SIGKILL): node 2 lets "bob" register again
    within 10 s (its heartbeat expires) and keeps serving its own calls."""
    p1, url1 = node(redis_server, "n1")
    p2, url2 = node(redis_server, "n2")

    async def scenario() -> float:
        async with contextlib.AsyncExitStack() as stack:
            watcher = await stack.enter_async_context(client(url2, "/room"))
            async with client(url1, "/register") as bob, client(url1, "/room") as ghost:
                await register(bob, "bob")
                async with client(url2, "/register") as other:
                    await other.send(encode_request(Command.INIT, "bob", ""))
                    await expect_response(other, Command.INIT_RESPONSE, 409)
                assert await join(ghost, "g", "r1") == ()
                assert await join(watcher, "w", "r1") == ("g",)
                p1.send_signal(signal.SIGKILL)
                killed = time.monotonic()
                p1.wait(10)
            async with client(url2, "/register") as again:
                while True:
                    await again.send(encode_request(Command.INIT, "bob", ""))
                    response = await expect_response(again, Command.INIT_RESPONSE, None)
                    if response.code == 0:
                        freed_after = time.monotonic() - killed
                        break
                    assert response.code == 409, response
                    assert time.monotonic() - killed < 10, "bob is still taken 10 s after the kill"
                    await asyncio.sleep(0.2)
                async with client(url2, "/offer") as alice:  # node 2 serves on
                    sent = offer_frame("alice", "bob")
                    await alice.send(sent)
                    assert await recv_frame(again) == sent
                    await expect_response(alice, Command.OFFER_RESPONSE, 0)
            # the dead node's room member leaves for the others (at its sweep)
            left = await recv_presence(watcher, timeout=15)
            assert left == ("g", "w", Presence("r1", "leave", member="g"))
            left_after = time.monotonic() - killed
            print(f"the SIGKILLed node's room member left after {left_after:.1f} s")
            assert left_after < 12, left_after
        return freed_after

    try:
        freed_after = run(scenario(), 40)
    finally:
        stop_server_process(p1)
        stop_server_process(p2)
    print(f"IDs of the SIGKILLed node free after {freed_after:.1f} s")


def test_redis_unreachable_at_start_is_a_clear_error_and_exit_1() -> None:
    """No Redis at the URL: one clear line, exit status 1, never 'listening'."""
    port = free_port()
    result = subprocess.run(
        server_command("serve", "--port", "0", "--redis", f"redis://127.0.0.1:{port}/0"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1, result
    assert "listening" not in result.stdout
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: --redis: cannot reach Redis at redis://127.0.0.1:"), last


def test_workers_without_redis_is_a_usage_error() -> None:
    """--workers 2 alone: exit 2 and a line saying --redis is needed."""
    result = subprocess.run(
        server_command("serve", "--port", "0", "--workers", "2"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "--workers needs --redis" in result.stderr


def test_two_workers_share_one_port_and_one_registry(redis_server: RedisServer) -> None:
    """--workers 2: connections land on both workers (both hold IDs in Redis),
    every offer reaches its answer peer whichever worker each is on, each
    offer peer ends up on its answer peer's worker (the connection moved: its
    call is local), and an ID taken through one worker is taken for all."""
    proc, url = start_server_process("--redis", redis_server.url, "--workers", "2")
    pairs = 12

    async def scenario() -> set[str]:
        answers = [await connect(url, "/register") for _ in range(pairs)]
        offers = [await connect(url, "/offer") for _ in range(pairs)]
        try:
            for i, ws in enumerate(answers):
                await register(ws, f"a{i}")
            for i, ws in enumerate(offers):
                sent = offer_frame(f"o{i}", f"a{i}")
                await ws.send(sent)
                assert await recv_frame(answers[i]) == sent
                await expect_response(ws, Command.OFFER_RESPONSE, 0)
            for _ in range(4):  # whichever worker it lands on: 409
                async with client(url, "/register") as dup:
                    await dup.send(encode_request(Command.INIT, "a0", ""))
                    await expect_response(dup, Command.INIT_RESPONSE, 409)
            for i in range(pairs):  # the offer ID is held where the answer peer is
                answer_node = redis_server.command("GET", f"rtc:answer:a{i}").split()[0]
                offer_node = redis_server.command("GET", f"rtc:offer:o{i}").split()[0]
                assert offer_node == answer_node, (i, offer_node, answer_node)
            holders = {redis_server.command("GET", f"rtc:answer:a{i}") for i in range(pairs)}
            return {value.split()[0] for value in holders}
        finally:
            for ws in answers + offers:
                await ws.close()

    try:
        holders = run(scenario(), 60)
    finally:
        status = stop_server_process(proc, timeout=15)
    assert len(holders) == 2, f"every connection landed on one worker: {holders}"
    assert status == 0
