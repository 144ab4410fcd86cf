"""Connections counted from TCP accept: slow clients (a byte a second, never finishing
their request) cannot take every slot from honest clients, and nothing they do makes
the server log a traceback. Real server on 127.0.0.1, real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from tests.conftest import client, eventually, register, run, running_server

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


PER_IP = 3


async def _raw_refusal(port: int, local: str) -> bytes:
    """Connect from ``local`` and return what the server says before we send anything."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(local, 0))
    try:
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_per_ip_limit_refuses_one_address_while_another_connects(loop: str) -> None:
    """--max-connections-per-ip 3: a 4th connection from 127.0.0.2 gets 503 "from your
    address" at once, while 127.0.0.1 still registers (canary); a closed connection
    gives 127.0.0.2 its slot back. On both event loops (`serve` runs uvloop by
    default, whose transports the refusal once asserted were asyncio's)."""

    async def main() -> tuple[bytes, list[str], bool]:
        async with running_server(max_connections_per_ip=PER_IP) as server:
            async with contextlib.AsyncExitStack() as stack:
                crowd = [
                    await stack.enter_async_context(
                        client(server.url, "/register", local_addr=("127.0.0.2", 0))
                    )
                    for _ in range(PER_IP)
                ]
                for n, ws in enumerate(crowd):
                    await asyncio.wait_for(register(ws, f"crowd-{n}"), 5)
                refused = await _raw_refusal(server.port, "127.0.0.2")
                registered = []
                async with client(server.url, "/register") as canary:
                    await asyncio.wait_for(register(canary, "canary"), 5)
                    registered.append("canary")
                await crowd[0].close()
                # its slot comes back once the server saw the TCP connection go
                await eventually(lambda: server._gate.per_address.get("127.0.0.2") == PER_IP - 1)
                async with client(server.url, "/register", local_addr=("127.0.0.2", 0)) as ws:
                    await asyncio.wait_for(register(ws, "crowd-again"), 5)
                    reopened = True
            return refused, registered, reopened

    refused, registered, reopened = run(main(), timeout=60, loop=loop)
    assert refused.startswith(b"HTTP/1.1 503 "), refused
    assert b"too many connections from your address" in refused
    assert registered == ["canary"]
    assert reopened
