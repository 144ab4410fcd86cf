"""Calls belong to their callers, end to end: a real server, real aiortc peers and a
hostile registered peer on 127.0.0.1.

The attacker is an answer peer with a valid registration that forges answers and
candidates for the victim's offer ID; the victim's calls must all complete, the
attacker must get 403s, and an offer peer must ignore an answer from anyone but
the peer it called even when a server forwards one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import pytest
from websockets.asyncio.server import ServerConnection, serve

from rtc_signal.peers import AnswerPeer, ConnectTimeout, IceSettings, PeerConfig, call
from rtc_signal.peers.session import Call
from rtc_signal.proto import Command, decode, encode_request, encode_response
from rtc_signal.signaling.router import FORBIDDEN
from rtc_signal.signaling.server import ServerConfig, SignalingServer
from tests.conftest import client, expect_response, run, within

ICE = IceSettings(host_addresses=("127.0.0.1",))
FORGED_SDP = json.dumps({"type": "answer", "sdp": "v=0\r\nforged\r\n"}).encode()
FORGED_CANDIDATE = b"candidate:1 1 udp 2130706431 127.0.0.1 9 typ host"
CALLS = 20


async def _echo(c: Call) -> None:
    async for message in c.channel:
        await c.channel.send(message)


def test_forged_answers_and_candidates_never_break_a_victims_calls() -> None:
    """A registered attacker floods forged answers/candidates at the victim's offer IDs
    while the victim makes 20 calls: 20 of 20 open and echo, the attacker gets only 403."""

    async def scenario() -> tuple[int, dict[int, int]]:
        server = SignalingServer(
            ServerConfig(host="127.0.0.1", port=0, ping_interval=None, rate_limit=None)
        )
        await server.start()
        config = PeerConfig(signal_url=server.url, ice=ICE, connect_timeout=15)
        peer = AnswerPeer(config, "victim-callee")
        serving = asyncio.create_task(peer.serve(_echo))
        codes: dict[int, int] = {}
        stop = asyncio.Event()

        async def attack() -> None:
            async with client(server.url, "/register") as ws:
                await ws.send(encode_request(Command.INIT, "mallory", ""))
                await expect_response(ws, Command.INIT_RESPONSE, 0)

                async def count_replies() -> None:
                    async for frame in ws:
                        response = decode(frame).response
                        codes[response.code] = codes.get(response.code, 0) + 1

                reader = asyncio.create_task(count_replies())
                try:
                    while not stop.is_set():
                        for n in range(1, CALLS + 1):
                            target = f"victim-{n}"
                            await ws.send(
                                encode_request(Command.ANSWER, "mallory", target, FORGED_SDP)
                            )
                            await ws.send(
                                encode_request(
                                    Command.CANDIDATE, "mallory", target, FORGED_CANDIDATE
                                )
                            )
                        await asyncio.sleep(0.005)
                finally:
                    reader.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await reader

        attacker = asyncio.create_task(attack())
        opened = 0
        try:
            await peer.wait_registered(5)
            for n in range(1, CALLS + 1):
                async with call(config, "victim-callee", f"victim-{n}") as c:
                    await c.channel.send(f"hello {n}")
                    assert await within(c.channel.receive(), 5) == f"hello {n}"
                    opened += 1
        finally:
            stop.set()
            await within(attacker, 10)
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving
            await server.close()
        return opened, codes

    opened, codes = run(scenario(), timeout=180)
    assert opened == CALLS
    assert codes.get(FORBIDDEN, 0) > 0, codes
    assert set(codes) <= {FORBIDDEN, 404}, codes  # never 0: nothing forged was forwarded


def test_offer_peer_ignores_an_answer_from_anyone_but_its_target(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Against a server that forwards a forged answer (source 'mallory'), the offer peer
    ignores it with a warning and keeps waiting for its target: it times out, it does
    not fail applying the forged SDP."""

    async def lying_server(ws: ServerConnection) -> None:
        async for frame in ws:
            request = decode(frame)
            if request.command is Command.OFFER:
                await ws.send(encode_response(Command.OFFER_RESPONSE, 0, "ok"))
                source = request.request.source
                await ws.send(encode_request(Command.ANSWER, "mallory", source, FORGED_SDP))

    async def scenario() -> BaseException | None:
        async with serve(lying_server, "127.0.0.1", 0) as fake:
            port = fake.sockets[0].getsockname()[1]
            config = PeerConfig(signal_url=f"ws://127.0.0.1:{port}", ice=ICE, connect_timeout=2)
            try:
                async with call(config, "target", "caller"):
                    pass
            except BaseException as exc:
                return exc
        return None

    caplog.set_level(logging.WARNING, logger="rtc_signal.peers.session")
    error = run(scenario(), timeout=30)
    assert isinstance(error, ConnectTimeout), repr(error)
    assert any(
        "ignoring ANSWER from 'mallory': we called 'target'" in r.getMessage()
        for r in caplog.records
    )


def test_forged_frames_are_refused_with_a_reason() -> None:
    """The attacker's refusal says why (no call), so honest clients can debug."""

    async def scenario() -> str:
        server = SignalingServer(ServerConfig(host="127.0.0.1", port=0, ping_interval=None))
        await server.start()
        try:
            async with (
                client(server.url, "/register") as mallory,
                client(server.url, "/register") as callee,
                client(server.url, "/offer") as caller,
            ):
                await mallory.send(encode_request(Command.INIT, "mallory", ""))
                await expect_response(mallory, Command.INIT_RESPONSE, 0)
                await callee.send(encode_request(Command.INIT, "callee", ""))
                await expect_response(callee, Command.INIT_RESPONSE, 0)
                body = b'{"type":"offer","sdp":"v=0"}'
                await caller.send(encode_request(Command.OFFER, "caller", "callee", body))
                await expect_response(caller, Command.OFFER_RESPONSE, 0)
                await mallory.send(encode_request(Command.ANSWER, "mallory", "caller", FORGED_SDP))
                response = await expect_response(mallory, Command.ANSWER_RESPONSE, FORBIDDEN)
                return response.msg
        finally:
            await server.close()

    assert run(scenario()) == "'caller' has not called 'mallory'"
