"""Nothing outlives its connection: the server's RSS and tables after 50,000 short
connections.

Usage: ``python benchmarks/leak.py [--connections 50000] [--warmup 2000]
[--concurrency 8] [--step 10000]``

The server is ``SignalingServer`` with ``rtc-signal serve``'s default options
(rate limit, idle timeout, connection limit, resume grace; see
``_leak_server.py``) in its own process, which can report the sizes of its
tables. One answer peer, ``sink``, stays registered. ``--concurrency`` client
tasks in this process then open short connections, one after the other, in
four kinds (in turn): ``/register`` + Init (101) + close; ``/offer`` + an Offer
to ``sink`` (103; this starts a pending call in the router) + close;
``/register`` + Init + TCP abort (no close frame); ``/offer`` + Offer + abort.

The baseline is taken after ``--warmup`` such connections (so that the
allocator's arenas and caches are warm), once the RSS has settled. Reported:
VmRSS of the server process (``/proc/PID/status``) at the baseline, after
each ``--step`` connections and at the end (settled), its growth against the
baseline (the goal is 5 % at most), the sizes of the server's tables, and how
long the connections took.

Loopback only; bounded waits; ``--time-limit`` for the whole run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import subprocess
import sys
import time
from typing import Any

from _common import (
    HERE,
    HOST,
    LeanWs,
    children,
    client_frame,
    connect,
    golden_offer_body,
    guard_children,
    machine,
    raise_fd_limit,
    rss_kib,
    rtc_request,
    settle_rss,
    table,
)

INIT, OFFER = 1, 3


class LeakServer:
    """``_leak_server.py`` as a child: its URL, and its table sizes on demand."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "_leak_server.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            preexec_fn=raise_fd_limit,
        )
        children.append(self.proc)
        line = self.readline()
        if not line.startswith("listening on "):
            raise RuntimeError(f"leak server did not start: {line!r}")
        self.port = int(line.rsplit(":", 1)[1])

    def readline(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().decode().strip()

    def sizes(self) -> dict[str, int]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"sizes\n")
        self.proc.stdin.flush()
        result: dict[str, int] = json.loads(self.readline())
        return result


class Sink(LeanWs):
    """The answer peer: takes every offer and answers none."""


def check_reply(frame: bytes, command: int) -> None:
    reply = json.loads(frame)
    payload = json.loads(base64.b64decode(reply["payload"]))
    # 0, or 429 from sink's inbox budget: either way the server answered
    if reply["command"] != command or payload["code"] not in (0, 429):
        raise RuntimeError(f"unexpected reply: {reply} {payload}")


async def short_connection(port: int, n: int, offer_body: bytes) -> None:
    kind = n % 4
    path = "/offer" if kind % 2 else "/register"
    ws = await connect(lambda: LeanWs(HOST, port, path), HOST, port, timeout=30)
    try:
        if path == "/register":
            frame = client_frame(rtc_request(INIT, f"leak-{n}", "", None))
            check_reply(await ws.request(frame, 30), INIT + 100)
        else:
            frame = client_frame(rtc_request(OFFER, f"caller-{n}", "sink", offer_body))
            check_reply(await ws.request(frame, 30), OFFER + 100)
    finally:
        if kind >= 2 and ws.transport is not None:
            ws.transport.abort()  # no close frame: the server sees a reset/EOF
        else:
            ws.close()


async def connections(port: int, start: int, count: int, concurrency: int) -> int:
    """``count`` short connections by ``concurrency`` tasks; returns the failures."""
    body = golden_offer_body()
    counter = iter(range(start, start + count))
    failures = 0

    async def worker() -> None:
        nonlocal failures
        for n in counter:
            try:
                await short_connection(port, n, body)
            except (OSError, RuntimeError, TimeoutError, ConnectionError) as exc:
                failures += 1
                if failures <= 5:
                    print(f"connection {n} failed: {exc!r}", file=sys.stderr)

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    return failures


async def bench(args: argparse.Namespace) -> None:
    server = LeakServer()
    pid, port = server.proc.pid, server.port
    sink = await connect(lambda: Sink(HOST, port, "/register"), HOST, port)
    await sink.request(client_frame(rtc_request(INIT, "sink", "", None)))
    sink.stop_capturing()
    started_rss = rss_kib(pid)
    failures = await connections(port, 0, args.warmup, args.concurrency)
    baseline = await settle_rss(pid, 10)
    rows: list[list[str]] = [
        ["start (sink registered)", "0", f"{started_rss:,}", "-", "-"],
        [f"baseline (after {args.warmup:,} warm-up)", "0", f"{baseline:,}", "+0.0 %", "-"],
    ]
    done = 0
    t0 = time.perf_counter()
    while done < args.connections:
        step = min(args.step, args.connections - done)
        began = time.perf_counter()
        failures += await connections(port, args.warmup + done, step, args.concurrency)
        elapsed = time.perf_counter() - began
        done += step
        rss = rss_kib(pid)
        rows.append(
            [
                f"after {done:,}",
                f"{done:,}",
                f"{rss:,}",
                f"{100 * (rss - baseline) / baseline:+.1f} %",
                f"{step / elapsed:,.0f}",
            ]
        )
    total = time.perf_counter() - t0
    settled = await settle_rss(pid, 15)
    rows.append(
        [
            "end (settled)",
            f"{done:,}",
            f"{settled:,}",
            f"{100 * (settled - baseline) / baseline:+.1f} %",
            "-",
        ]
    )
    sizes: dict[str, Any] = server.sizes()
    sink.close()
    await asyncio.sleep(0.5)
    after_sink = server.sizes()
    print(
        f"# Leak: {args.connections:,} short connections after {args.warmup:,} warm-up "
        f"({args.concurrency} concurrent clients)\n"
    )
    print(f"Machine: {machine('websockets')}\n")
    print(table(["point", "connections", "server RSS KiB", "vs baseline", "conn/s"], rows))
    print(
        f"\n{done:,} connections in {total:.1f} s ({done / total:,.0f}/s), "
        f"{failures} failed (warm-up included)."
    )
    print(f"Server tables at the end (sink still connected): {json.dumps(sizes)}")
    print(f"... and once sink closed: {json.dumps(after_sink)}")
    growth = 100 * (settled - baseline) / baseline
    print(f"RSS growth vs baseline: {growth:+.1f} % (goal: within 5 %).")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=50_000)
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--step", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--time-limit", type=float, default=1200)
    args = parser.parse_args()
    raise_fd_limit()
    guard_children(args.time_limit)
    asyncio.run(bench(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
