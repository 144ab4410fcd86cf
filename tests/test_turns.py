"""Turns of the event loop: a busy client's burst is routed a slice at a time
(``SignalingServer.slice_messages``, round robin between waiting connections),
so that another client's message does not wait for the whole burst; nothing is
lost, duplicated or reordered on the way. Real server on 127.0.0.1."""

from __future__ import annotations

import pytest

from rtc_signal.signaling.handover import client_frame
from rtc_signal.signaling.server import SignalingServer
from tests.conftest import (
    client,
    offer_frame,
    recv_envelope,
    recv_frame,
    register,
    request_of,
    run,
    running_server,
)

BURST = 400


def _burst(source: str, target: str, count: int) -> bytes:
    """``count`` Offers, each with its index in the SDP, framed for one write."""
    return b"".join(client_frame(offer_frame(source, target, sdp=f"v=0 {i}")) for i in range(count))


def _small_turns(server: SignalingServer, slice_messages: int, turn_messages: int) -> None:
    server.slice_messages, server.turn_messages = slice_messages, turn_messages
    server.budget = slice_messages


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_lone_offer_is_routed_before_a_burst_in_progress_ends(loop: str) -> None:
    """A caller writes 400 Offers at once; once its target sees the first ones,
    a second caller sends one Offer to the same target: it arrives well before
    the burst's end (it waited for one turn, not for the burst). Both loops."""

    async def main() -> int:
        async with running_server() as server:
            _small_turns(server, 8, 2)
            async with (
                client(server.url, "/register") as target,
                client(server.url, "/offer") as busy,
                client(server.url, "/offer") as lone,
            ):
                await register(target, "t")
                busy.transport.write(_burst("busy", "t", BURST))
                sources = [request_of(await recv_frame(target)).source]  # the burst began
                await lone.send(offer_frame("lone", "t"))
                while len(sources) < BURST + 1:
                    sources.append(request_of(await recv_frame(target)).source)
                for ws, count in ((busy, BURST), (lone, 1)):
                    for _ in range(count):
                        assert (await recv_envelope(ws)).response.code == 0
                return sources.index("lone")

    position = run(main(), timeout=60, loop=loop)
    assert position < BURST // 2, position


@pytest.mark.parametrize(
    ("turns", "loop"),
    [((1, 1), "asyncio"), ((3, 2), "asyncio"), ((128, 32), "asyncio"), ((3, 2), "uvloop")],
)
def test_bursts_in_small_turns_lose_and_reorder_nothing(turns: tuple[int, int], loop: str) -> None:
    """Two callers' bursts to two targets, routed a few messages per turn: each
    target gets its caller's 400 Offers once each and in order, and each caller
    gets 400 acknowledgements."""

    async def main() -> None:
        async with running_server() as server:
            _small_turns(server, *turns)
            async with (
                client(server.url, "/register") as t1,
                client(server.url, "/register") as t2,
                client(server.url, "/offer") as c1,
                client(server.url, "/offer") as c2,
            ):
                await register(t1, "t1")
                await register(t2, "t2")
                c1.transport.write(_burst("c1", "t1", BURST))
                c2.transport.write(_burst("c2", "t2", BURST))
                for target, caller in ((t1, "c1"), (t2, "c2")):
                    sdps = []
                    for _ in range(BURST):
                        request = request_of(await recv_frame(target))
                        assert request.source == caller
                        assert request.body is not None
                        sdps.append(request.body)
                    assert sdps == [
                        request_of(offer_frame(caller, "x", sdp=f"v=0 {i}")).body
                        for i in range(BURST)
                    ]
                for ws in (c1, c2):
                    for _ in range(BURST):
                        assert (await recv_envelope(ws)).response.code == 0
            assert not server._waiting and not server._light

    run(main(), timeout=60, loop=loop)
