"""No amplification: what others send to a peer is never charged to that peer.

Real server on 127.0.0.1 with a small rate limit; hostile offer connections
flood an answer peer that acknowledges everything, as `rtc-peer answer` and
the Go demo's peers do. Its acks ride on the credits the forwards earned it,
so it is never refused nor closed, and an honest caller still gets through;
a crowd larger than the target's inbox budget is refused at the flooders.
"""

from __future__ import annotations

import asyncio
import contextlib

from websockets.asyncio.client import ClientConnection

from rtc_signal.proto import Command, decode, encode_request, encode_response
from rtc_signal.signaling.limits import RateLimit
from rtc_signal.signaling.router import TOO_MANY_REQUESTS
from rtc_signal.signaling.server import INBOX_SHARES, ServerConfig, SignalingServer
from tests.conftest import client, expect_response, run

RATE = 20.0
CANDIDATE = b"candidate:1 1 udp 2130706431 127.0.0.1 9 typ host"


async def _victim(ws: ClientConnection, seen: dict[str, int]) -> None:
    """Acknowledge every request forwarded to us; count refusals of our acks."""
    async for frame in ws:
        envelope = decode(frame)
        if envelope.command.is_request:
            seen["requests"] = seen.get("requests", 0) + 1
            await ws.send(encode_response(envelope.command.response, 0, "ok"))
        elif envelope.response.code == TOO_MANY_REQUESTS:
            seen["refused"] = seen.get("refused", 0) + 1


async def _flood(url: str, name: str, rate: float, seconds: float, codes: dict[int, int]) -> None:
    """Send candidates to the victim at ``rate`` (under our own limit) for ``seconds``."""
    async with client(url, "/offer") as ws:

        async def count() -> None:
            async for frame in ws:
                code = decode(frame).response.code
                codes[code] = codes.get(code, 0) + 1

        reader = asyncio.create_task(count())
        try:
            # Paced on a fixed schedule (not a sleep after each send), so that
            # a loaded machine delays frames but does not lower the total sent.
            loop = asyncio.get_running_loop()
            start = loop.time()
            for n in range(int(rate * seconds)):
                await asyncio.sleep(max(0.0, start + n / rate - loop.time()))
                await ws.send(encode_request(Command.CANDIDATE, name, "victim", CANDIDATE))
            await asyncio.sleep(0.2)  # the last replies
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


def _scenario(flooders: int) -> tuple[dict[str, int], dict[int, int], int, bool]:
    async def scenario() -> tuple[dict[str, int], dict[int, int], int, bool]:
        server = SignalingServer(
            ServerConfig(
                host="127.0.0.1",
                port=0,
                ping_interval=None,
                rate_limit=RateLimit(RATE, RATE, grace=1.0),
            )
        )
        await server.start()
        seen: dict[str, int] = {}
        codes: dict[int, int] = {}
        try:
            async with client(server.url, "/register") as victim:
                await victim.send(encode_request(Command.INIT, "victim", ""))
                await expect_response(victim, Command.INIT_RESPONSE, 0)
                acking = asyncio.create_task(_victim(victim, seen))
                floods = [
                    _flood(server.url, f"flooder-{n}", RATE * 0.9, 3.0, codes)
                    for n in range(flooders)
                ]
                await asyncio.gather(*floods)
                # an honest caller, after the flood: answered and forwarded
                async with client(server.url, "/offer") as caller:
                    body = b'{"type":"offer","sdp":"v=0"}'
                    await caller.send(encode_request(Command.OFFER, "honest", "victim", body))
                    honest = (await expect_response(caller, Command.OFFER_RESPONSE, None)).code
                await asyncio.sleep(0.2)
                victim_open = victim.close_code is None
                acking.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await acking
        finally:
            await server.close()
        return seen, codes, honest, victim_open

    return run(scenario(), timeout=60)


def test_acks_of_forwarded_frames_are_not_charged_to_the_target() -> None:
    """Three flooders, each under its own limit, together over the victim's: the victim
    acks every frame (about 2.7x its own rate) and is never refused nor closed."""
    seen, codes, honest, victim_open = _scenario(3)
    assert seen.get("requests", 0) > RATE * 3 * 2, seen  # well over its own rate
    assert seen.get("refused", 0) == 0, seen
    assert victim_open
    assert honest == 0
    assert set(codes) == {0}, codes  # within the inbox budget: every frame forwarded


def test_a_crowd_over_the_inbox_budget_is_refused_at_the_flooders() -> None:
    """More flooders than the inbox budget allows get 429 themselves; the victim is
    never refused nor closed."""
    # 8 x 18/s x 3 s = 432 frames against a budget of 4 x (20 + 20/s x 3 s) = 320
    seen, codes, honest, victim_open = _scenario(INBOX_SHARES + 4)
    assert codes.get(TOO_MANY_REQUESTS, 0) > 0, codes
    assert seen.get("refused", 0) == 0, seen
    assert victim_open
    assert honest in (0, TOO_MANY_REQUESTS)  # the budget refills within a second
