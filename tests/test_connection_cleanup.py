"""Nothing outlives its connection: after a churn of short connections, the server's
tables (its connections, the router's registry and calls, the accept gate, resume
timers, websockets' handler tasks) are back to what they held before, and no
server-side connection object is still alive. A structural check (the RSS figures
are in benchmarks/leak.py). Real server on 127.0.0.1, raw sockets."""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import os
from typing import Any

from rtc_signal.signaling.connection import FastPathConnection
from rtc_signal.signaling.limits import RateLimit
from rtc_signal.signaling.server import SignalingServer
from tests.conftest import client, eventually, offer_frame, register, run, running_server

CONNECTIONS = 1_200
CONCURRENCY = 8
MASK = b"\x01\x02\x03\x04"


def masked(payload: bytes, opcode: int = 0x2) -> bytes:
    """A masked client frame (binary by default; payloads here are under 64 KiB)."""
    if len(payload) < 126:
        head = bytes([0x80 | opcode, 0x80 | len(payload)])
    else:
        head = bytes([0x80 | opcode, 0x80 | 126]) + len(payload).to_bytes(2, "big")
    return head + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readexactly(2)
    length = head[1] & 0x7F
    if length == 126:
        length = int.from_bytes(await reader.readexactly(2), "big")
    return await reader.readexactly(length)


async def short_connection(port: int, n: int) -> int:
    """One short connection of kind ``n % 4`` (register or offer; close frame or
    abort); returns the reply's code."""
    path = "/offer" if n % 2 else "/register"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        status = await reader.readuntil(b"\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 101"), status
        if path == "/register":
            frame = json.dumps(
                {
                    "command": 1,
                    "payload": base64.b64encode(
                        json.dumps({"source": f"churn-{n}", "target": "", "body": None}).encode()
                    ).decode(),
                }
            ).encode()
        else:
            frame = offer_frame(f"caller-{n}", "sink")
        writer.write(masked(frame))
        reply = json.loads(await read_frame(reader))
        code = int(json.loads(base64.b64decode(reply["payload"]))["code"])
        if n % 4 < 2:
            writer.write(masked((1000).to_bytes(2, "big"), opcode=0x8))  # close, 1000
        return code
    finally:
        if n % 4 >= 2:
            writer.transport.abort()  # no close frame: a dropped peer
        else:
            writer.close()


def tables(server: SignalingServer) -> dict[str, Any]:
    """Every per-connection table of the server (private fields, read only)."""
    router = server.router
    assert server._server is not None
    return {
        "connections": len(server._connections),
        "router": len(router),
        "answers": len(router._answers),
        "offers": len(router._offers),
        "held": len(router._held),
        "calls": len(router._calls),
        "gate": len(server._gate),
        "gate_addresses": dict(server._gate.per_address),
        "releases": len(server._releases),
        "handler_tasks": len(server._server.handler_tasks),
        "ws_connections": len(server._server.all_connections),
    }


def live_connections() -> int:
    """Server-side connection objects still alive (by their type: a weakref proxy,
    which websockets keeps of each, would pass ``isinstance``)."""
    gc.collect()
    return sum(1 for obj in gc.get_objects() if FastPathConnection in type(obj).__mro__)


def test_short_connections_leave_nothing_behind() -> None:
    """1,200 short connections (register or offer to a registered peer, then a close
    frame or a TCP abort) with the CLI's limits on: afterwards every table holds only
    the one peer that stayed, and once it leaves, nothing; no connection object lives
    on."""

    async def main() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], list[int], int]:
        async with running_server(
            rate_limit=RateLimit(100.0, 200),
            idle_timeout=60.0,
            max_connections=500,
            max_connections_per_ip=400,
            handshake_timeout=10.0,
            resume_grace=30.0,
        ) as server:
            codes: list[int] = []
            async with client(server.url, "/register") as sink:
                await register(sink, "sink")

                async def drain() -> None:  # sink reads the offers (never answers)
                    async for _ in sink:
                        pass

                drainer = asyncio.create_task(drain())
                before = tables(server)
                numbers = iter(range(CONNECTIONS))

                async def worker() -> None:
                    for n in numbers:
                        codes.append(await asyncio.wait_for(short_connection(server.port, n), 10))

                async with asyncio.TaskGroup() as group:
                    for _ in range(CONCURRENCY):
                        group.create_task(worker())
                await eventually(lambda: tables(server) == before, timeout=20)
                during = tables(server)
                with_sink = live_connections()
                drainer.cancel()
            await eventually(lambda: len(server._connections) == 0, timeout=10)
            await eventually(lambda: live_connections() == 0, timeout=10)
            return before, during, tables(server), codes, with_sink

    before, during, after, codes, with_sink = run(main(), timeout=180)
    assert len(codes) == CONNECTIONS
    # 0, or 429 once sink's inbox budget is spent: every connection was answered
    assert set(codes) <= {0, 429}, set(codes)
    assert before["connections"] == 1 and before["gate_addresses"] == {"127.0.0.1": 1}
    assert during == before
    assert with_sink == 1
    assert after == {
        "connections": 0,
        "router": 0,
        "answers": 0,
        "offers": 0,
        "held": 0,
        "calls": 0,
        "gate": 0,
        "gate_addresses": {},
        "releases": 0,
        "handler_tasks": 0,
        "ws_connections": 0,
    }
