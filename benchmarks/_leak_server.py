"""The server of ``benchmarks/leak.py``: ``SignalingServer`` with the options
``rtc-signal serve`` uses by default, in its own process, which also reports
the sizes of its tables (a line ``sizes`` on stdin: one JSON line on stdout).

``rtc-signal serve`` itself cannot say how many entries its router, gate and
timers hold; this runs the same library code with the CLI's defaults (kept in
step with signaling/cli.py by hand) so that the leak benchmark can show them
next to the RSS. Stops on SIGTERM or at EOF on stdin.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import sys
from typing import Any

from rtc_signal.signaling.limits import RateLimit
from rtc_signal.signaling.server import ServerConfig, SignalingServer

#: file descriptors kept for everything but connections (as the CLI's FD_RESERVE)
FD_RESERVE = 64


def sizes(server: SignalingServer) -> dict[str, Any]:
    """How many entries each per-connection table holds (private fields: read only)."""
    router = server.router
    gate = server._gate
    whep = server.whep
    return {
        "connections": len(server._connections),
        "router_conns": len(router),
        "router_answers": len(router._answers),
        "router_offers": len(router._offers),
        "router_held": len(router._held),
        "calls": len(router._calls),
        "gate": len(gate),
        "gate_per_address": len(gate.per_address),
        "releases": len(server._releases),
        "dirty": len(server._dirty),
        "whep_sessions": 0 if whep is None else len(whep.sessions),
        "handler_tasks": 0 if server._server is None else len(server._server.handler_tasks),
        "ws_connections": 0 if server._server is None else len(server._server.all_connections),
    }


async def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    config = ServerConfig(
        host="127.0.0.1",
        port=0,
        rate_limit=RateLimit(100.0, 200),
        idle_timeout=60.0,
        max_connections=max(1, soft - FD_RESERVE),
        handshake_timeout=10.0,
        resume_grace=30.0,
    )
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    async with SignalingServer(config) as server:
        print(f"listening on {server.url}", flush=True)
        while line := await reader.readline():
            if line.strip() == b"sizes":
                print(json.dumps(sizes(server)), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
