"""Bounded logs: a client repeating refused frames with huge user strings cannot
fill the server's log (the real `rtc-signal serve`, default --log-level info)."""

from __future__ import annotations

import asyncio

from rtc_signal.proto import Command, encode_request
from tests.conftest import (
    client,
    run,
    server_stderr,
    start_server_process,
    stop_server_process,
)

HUGE_TARGET = "x" * 45_000
RATE = 95  # frames/s: under the default rate limit (100/s), so every one is routed
SECONDS = 5.0
#: the issue's bound: 100 KB of log a minute
MAX_BYTES_PER_MINUTE = 100_000


def test_a_flood_of_refused_frames_with_a_45000_character_target_barely_grows_the_log() -> None:
    """95 frames/s naming a 45,000-character unknown target for 5 s: every one gets its
    404, and the log grows by well under 100 KB a minute (user strings clipped, repeated
    refusals logged once per hundred)."""
    proc, url = start_server_process()
    try:
        before = len(server_stderr(proc).encode())

        async def flood() -> int:
            replies = 0
            async with client(url, "/offer") as ws:
                frame = encode_request(Command.OFFER, "flooder", HUGE_TARGET, b"{}")
                loop = asyncio.get_running_loop()
                end = loop.time() + SECONDS
                sent = 0
                while loop.time() < end:
                    await ws.send(frame)
                    sent += 1
                    await asyncio.sleep(1 / RATE)
                while replies < sent:
                    await asyncio.wait_for(ws.recv(), 5)
                    replies += 1
            return replies

        replies = run(flood(), timeout=60)
        log = server_stderr(proc)
        grown = len(log.encode()) - before
    finally:
        stop_server_process(proc)
    assert replies > RATE * SECONDS * 0.5
    assert grown <= MAX_BYTES_PER_MINUTE * SECONDS / 60, f"{grown} bytes of log in {SECONDS} s"
    assert "refusing with 404" in log  # it is logged, in short
    assert HUGE_TARGET[:100] not in log
