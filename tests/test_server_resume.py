"""The real server holding a dropped answer peer's ID for its resume key
(websockets clients on loopback; the drop is a TCP abort, no close frame)."""

from __future__ import annotations

import asyncio

import pytest
from websockets.exceptions import InvalidStatus

from rtc_signal.proto import Command, Response, encode_request
from tests.conftest import (
    client,
    connect,
    eventually,
    expect_response,
    register,
    run,
    running_server,
)

PEER = "answer-resume"


async def _try_register(url: str, key: str | None) -> int:
    """Register PEER on a fresh /register connection (with ``key``); the response code."""
    return (await _register_response(url, key)).code


async def _register_response(url: str, key: str | None) -> Response:
    path = "/register" + (f"?resume={key}" if key else "")
    async with client(url, path) as ws:
        await ws.send(encode_request(Command.INIT, PEER, ""))
        return await expect_response(ws, Command.INIT_RESPONSE, None)


def test_dropped_peer_gets_its_id_back_with_its_key_and_others_get_409() -> None:
    """After an abrupt drop, only the same resume key registers the ID again."""

    async def scenario() -> None:
        async with running_server(resume_grace=30.0) as server:
            ws = await connect(server.url, "/register?resume=k1")
            await register(ws, PEER)
            ws.transport.abort()  # a dropped link: no closing handshake
            await eventually(lambda: server.router.held_peers() == [PEER])
            refused = await _register_response(server.url, "k2")
            assert refused.code == 409
            # the server's grace period, so the other peer knows how long to wait
            assert "held for its reconnecting peer (up to 30 s after it dropped)" in refused.msg
            assert await _try_register(server.url, None) == 409
            async with client(server.url, "/register?resume=k1") as again:
                await register(again, PEER)
                assert server.router.answer_peers() == [PEER]

    run(scenario())


def test_held_id_is_freed_when_the_grace_period_ends() -> None:
    """With a short --resume-grace, another peer gets the ID once it has run out."""

    async def scenario() -> None:
        async with running_server(resume_grace=0.3) as server:
            ws = await connect(server.url, "/register?resume=k1")
            await register(ws, PEER)
            ws.transport.abort()
            await eventually(lambda: server.router.held_peers() == [PEER])
            await eventually(lambda: server.router.held_peers() == [], timeout=5)
            assert await _try_register(server.url, "k2") == 0

    run(scenario())


def test_clean_close_and_zero_grace_hold_nothing() -> None:
    """A peer closing with 1000 is leaving; with grace 0 a drop frees the ID at once."""

    async def scenario() -> None:
        async with running_server(resume_grace=30.0) as server:
            assert await _try_register(server.url, "k1") == 0  # closes cleanly on exit
            await eventually(lambda: server.router.answer_peers() == [])
            assert server.router.held_peers() == []
            assert await _try_register(server.url, "k2") == 0
        async with running_server(resume_grace=0) as server:
            ws = await connect(server.url, "/register?resume=k1")
            await register(ws, PEER)
            ws.transport.abort()
            await eventually(lambda: server.router.answer_peers() == [])
            await asyncio.sleep(0.05)
            assert server.router.held_peers() == []
            assert await _try_register(server.url, "k2") == 0

    run(scenario())


def test_malformed_resume_key_is_refused_at_the_handshake() -> None:
    """An empty or over-long resume key gets HTTP 400, and the server goes on."""

    async def scenario() -> None:
        async with running_server() as server:
            for query in ("resume=", "resume=" + "x" * 65, "resume=a&resume=b"):
                with pytest.raises(InvalidStatus) as info:
                    await connect(server.url, "/register?" + query)
                assert info.value.response.status_code == 400
            assert await _try_register(server.url, "ok-key") == 0

    run(scenario())
