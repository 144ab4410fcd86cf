"""Connections counted from TCP accept: slow clients (a byte a second, never finishing
their request) cannot take every slot from honest clients, and nothing they do makes
the server log a traceback. Real server on 127.0.0.1, real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from tests.conftest import client, register, run, running_server

LIMIT = 40
SLOW = 60  # more slow clients than the limit


async def _slow_client(port: int, stop: asyncio.Event, dropped: list[int]) -> None:
    """Send a request head one byte every 0.2 s, never finishing it."""
    head = b"GET /register HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n" * 100
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        dropped.append(1)
        return
    try:
        for byte in head:
            if stop.is_set():
                return
            writer.write(bytes([byte]))
            await writer.drain()
            with contextlib.suppress(TimeoutError):
                if not await asyncio.wait_for(reader.read(1), 0.2):
                    dropped.append(1)  # the server closed us: evicted
                    return
    except OSError:
        dropped.append(1)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 1)


def test_slow_clients_cannot_lock_out_honest_registrations(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """60 slow clients against --max-connections 40: the oldest slow ones are dropped to
    make room, the server never holds more than 40, and honest peers still register
    (and stay registered); no ERROR and no traceback is logged."""

    async def main() -> tuple[int, int, list[str]]:
        async with running_server(max_connections=LIMIT, handshake_timeout=10.0) as server:
            stop = asyncio.Event()
            dropped: list[int] = []
            slow = [
                asyncio.create_task(_slow_client(server.port, stop, dropped)) for _ in range(SLOW)
            ]
            try:
                await asyncio.sleep(1.0)  # all of them connected and dripping
                held = len(server._gate)
                registered = []
                for n in range(5):
                    async with client(server.url, "/register", open_timeout=5) as ws:
                        await asyncio.wait_for(register(ws, f"honest-{n}"), 5)
                        registered.append(f"honest-{n}")
                    await asyncio.sleep(0.1)
                return held, len(dropped), registered
            finally:
                stop.set()
                await asyncio.wait_for(asyncio.gather(*slow, return_exceptions=True), 10)

    caplog.set_level(logging.INFO)
    held, dropped, registered = run(main(), timeout=60)
    assert held <= LIMIT
    assert dropped >= SLOW - LIMIT  # the surplus was dropped, oldest first
    assert registered == [f"honest-{n}" for n in range(5)]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not errors, [r.getMessage() for r in errors]
