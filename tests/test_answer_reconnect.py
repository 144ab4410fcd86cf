"""AnswerPeer (the library) across signaling loss: real in-process servers
and aiortc peers on 127.0.0.1. The call's channel must keep working while
the server is gone; the peer must come back (or, without a reconnect policy,
finish its calls and raise)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from rtc_signal.peers import AnswerPeer, IceSettings, PeerConfig, call
from rtc_signal.peers.errors import SignalingError
from rtc_signal.peers.reconnect import ReconnectPolicy
from rtc_signal.peers.session import Call
from rtc_signal.proto import Command, encode_request
from rtc_signal.signaling.server import ServerConfig, SignalingServer
from tests.conftest import client, eventually, expect_response, run, within

FAST = ReconnectPolicy(base_delay=0.05, max_delay=0.2)
ICE = IceSettings(host_addresses=("127.0.0.1",))


async def _echo(c: Call) -> None:
    async for message in c.channel:
        await c.channel.send(message)


async def _roundtrip(c: Call, text: str) -> None:
    await c.channel.send(text)
    assert await within(c.channel.receive(), 5) == text


def _server(port: int = 0) -> SignalingServer:
    return SignalingServer(ServerConfig(host="127.0.0.1", port=port, ping_interval=None))


def test_call_goes_on_while_the_server_restarts_and_the_peer_registers_again() -> None:
    """Echo works with the server down and after it is back; a new caller gets through."""

    async def scenario() -> list[str]:
        lines: list[str] = []
        server = _server()
        await server.start()
        port = server.port
        config = PeerConfig(signal_url=server.url, ice=ICE)
        peer = AnswerPeer(config, "phoenix", reconnect=FAST, on_status=lines.append)
        serving = asyncio.create_task(peer.serve(_echo))
        try:
            await peer.wait_registered(5)
            async with call(config, "phoenix") as first:
                await _roundtrip(first, "before")
                await server.close()
                # down long enough for attempts to fail and be retried
                await eventually(lambda: sum("failed" in x for x in lines) >= 2, timeout=5)
                await _roundtrip(first, "while the server is down")
                server = _server(port)
                await server.start()
                await eventually(lambda: peer.registrations == 2, timeout=5)
                await _roundtrip(first, "after the restart")
                async with call(config, "phoenix") as second:
                    await _roundtrip(second, "a new caller")
            return lines
        finally:
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving
            await server.close()

    lines = run(scenario())
    assert lines[0].startswith("lost the signaling server")
    assert any(line.startswith("reconnect attempt") and "failed" in line for line in lines)


def test_dropped_link_gets_the_held_id_back_and_an_impostor_is_refused() -> None:
    """The server cuts the peer's TCP link: the ID is held for its resume key,
    another registrant gets 409, the peer re-registers under its ID."""

    async def scenario() -> None:
        async with contextlib.AsyncExitStack() as stack:
            server = _server()
            await server.start()
            stack.push_async_callback(server.close)
            config = PeerConfig(signal_url=server.url, ice=ICE)
            peer = AnswerPeer(config, "held", reconnect=ReconnectPolicy(0.5, 1.0))
            serving = asyncio.create_task(peer.serve(_echo))
            try:
                await peer.wait_registered(5)
                (conn,) = [
                    ws
                    for c, ws in server._connections.items()
                    if server.router.peer_id(c) == "held"
                ]
                conn.transport.abort()
                await eventually(lambda: server.router.held_peers() == ["held"])
                async with client(server.url, "/register?resume=someone-else") as ws:
                    await ws.send(encode_request(Command.INIT, "held", ""))
                    refused = await expect_response(ws, Command.INIT_RESPONSE, None)
                assert refused.code == 409 and "held" in refused.msg
                await eventually(lambda: peer.registrations == 2, timeout=5)
                assert server.router.answer_peers() == ["held"]
                async with call(config, "held") as c:
                    await _roundtrip(c, "still me")
            finally:
                serving.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await serving

    run(scenario())


def test_without_reconnect_the_peer_finishes_its_call_then_raises() -> None:
    """reconnect=None: the call in progress goes on; serve() raises SignalingError after it."""

    async def scenario() -> None:
        server = _server()
        await server.start()
        config = PeerConfig(signal_url=server.url, ice=ICE)
        peer = AnswerPeer(config, "once", reconnect=None)
        assert peer.resume_key is None  # nobody would come back for a held ID
        serving = asyncio.create_task(peer.serve(_echo))
        try:
            await peer.wait_registered(5)
            async with call(config, "once") as c:
                await server.close()
                await asyncio.sleep(0.2)
                assert not serving.done()
                await _roundtrip(c, "still connected")
            with pytest.raises(SignalingError):
                await within(serving, 10)
        finally:
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError, SignalingError):
                await serving

    run(scenario())


def test_reconnect_stops_at_401_when_the_token_is_no_longer_accepted() -> None:
    """The server comes back with another secret: the peer's token is refused
    (HTTP 401), which retrying cannot fix, so the peer stops retrying; its
    call goes on, and once it has ended serve() raises HandshakeRefused."""
    from rtc_signal.peers.errors import HandshakeRefused
    from rtc_signal.proto import tokens

    old, new = b"first-secret-0123456789", b"second-secret-0123456789"
    expires = 2**31 + 1  # (2038: far enough)

    def secured(secret: bytes, port: int = 0) -> SignalingServer:
        return SignalingServer(
            ServerConfig(host="127.0.0.1", port=port, ping_interval=None, secret=secret)
        )

    async def scenario() -> list[str]:
        lines: list[str] = []
        server = secured(old)
        await server.start()
        port = server.port
        answer_config = PeerConfig(
            signal_url=server.url, ice=ICE, token=tokens.mint(old, "rotated", expires)
        )
        caller_config = PeerConfig(
            signal_url=server.url, ice=ICE, token=tokens.mint(old, "caller", expires)
        )
        peer = AnswerPeer(answer_config, "rotated", reconnect=FAST, on_status=lines.append)
        serving = asyncio.create_task(peer.serve(_echo))
        try:
            await peer.wait_registered(5)
            async with call(caller_config, "rotated", "caller") as c:
                await server.close()
                server = secured(new, port)
                await server.start()
                await _roundtrip(c, "the call does not need the server")
                await eventually(lambda: any("401" in x for x in lines), timeout=5)
                await _roundtrip(c, "nor the refusal")
            # the call over, the peer gives up (serve() waits for its calls)
            with pytest.raises(HandshakeRefused) as info:
                await within(asyncio.shield(serving), 10)
            assert info.value.status == 401
            assert peer.registrations == 1
            return lines
        finally:
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError, HandshakeRefused):
                await serving
            await server.close()

    lines = run(scenario())
    assert lines[0].startswith("lost the signaling server")
