"""Slowloris: honest registrations while 1,300 slow clients hold on to a server
limited to 1,000 connections.

Usage: ``python benchmarks/slowloris.py [--runs 3] [--slow 1300] [--limit 1000]
[--registrations 20]``

``rtc-signal serve --max-connections 1000`` (``--handshake-timeout`` 10 s, the
default; ``--log-level info``). Each run has two phases, in this order:

1. no slow clients: ``--registrations`` honest registrations, one every
   ``--spacing`` s (open ``/register``, send Init, wait for the 101 with code 0),
   each timed from the TCP connect to the 101;
2. the same while a worker process keeps ``--slow`` slow clients on the server:
   each opens a TCP connection and sends a request head one byte a second,
   never finishing it; when the server drops it, it reconnects a second later
   (what a slowloris does). The registrations start once all of them have
   connected and last longer than the handshake timeout, so that they also
   meet the wave of reconnections it causes.

Reported: median registration time per phase (median of the runs' medians)
and their ratio (the goal is 2x at most), failed registrations, tracebacks and
ERROR lines in the server's log (goal 0), the server's open file descriptors
(sampled), and what the slow clients saw: connects, dropped by the server
(evicted to make room, or at the handshake timeout), 503 responses, and how
soon after the connection that made room the oldest slow client was dropped.

A last phase fills every slot with connections that finished their handshake
and then opens 300 more: those must get HTTP 503 at once (count and time).

Loopback only; bounded waits; ``--time-limit`` for the whole run; children
are stopped at exit. File-descriptor limits are raised to the hard limit in
this process and its children.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from _common import (
    HOST,
    LeanWs,
    ServerProc,
    _start,
    children,
    client_frame,
    connect,
    console_script,
    guard_children,
    machine,
    raise_fd_limit,
    rtc_request,
    table,
)

INIT, INIT_RESPONSE = 1, 101
#: a request head that never ends (the server's handshake timeout comes first)
SLOW_HEAD = b"GET /register HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Slow: 1\r\n" * 1000


# -- the slow clients (a worker process) -------------------------------------------


@dataclass
class SlowStats:
    connects: int = 0
    connect_errors: int = 0
    #: closed by the server before the handshake timeout (evicted to make room)
    evicted: int = 0
    #: closed by the server at or after the handshake timeout
    timed_out: int = 0
    #: HTTP 503 responses
    refused_503: int = 0
    #: other bytes the server sent
    other_replies: int = 0
    #: during the ramp: seconds from the (limit + k)-th connect to the k-th drop
    eviction_delays: list[float] = field(default_factory=list)


async def slow_client(
    port: int,
    start_delay: float,
    timeout: float,
    stats: SlowStats,
    connect_times: list[float],
    drop_times: list[float],
    stop: asyncio.Event,
) -> None:
    await asyncio.sleep(start_delay)
    while not stop.is_set():
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 10)
        except (OSError, TimeoutError):
            stats.connect_errors += 1
            await asyncio.sleep(1.0)
            continue
        opened = time.monotonic()
        stats.connects += 1
        connect_times.append(opened)
        try:
            for byte in SLOW_HEAD:
                writer.write(bytes([byte]))
                try:
                    data = await asyncio.wait_for(reader.read(4096), 1.0)
                except TimeoutError:
                    if stop.is_set():
                        return
                    continue
                if data.startswith(b"HTTP/1.1 503"):
                    stats.refused_503 += 1
                elif data:
                    stats.other_replies += 1
                elif time.monotonic() - opened < timeout - 0.5:
                    stats.evicted += 1
                    drop_times.append(time.monotonic())
                else:
                    stats.timed_out += 1
                break
        except OSError:  # reset: dropped
            if time.monotonic() - opened < timeout - 0.5:
                stats.evicted += 1
                drop_times.append(time.monotonic())
            else:
                stats.timed_out += 1
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1)
        if not stop.is_set():
            await asyncio.sleep(1.0)  # then come back, as a slowloris does


async def slow_worker(cfg: dict[str, Any]) -> dict[str, Any]:
    """Keep ``cfg["slow"]`` slow clients on the server until SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    stats = SlowStats()
    connect_times: list[float] = []
    drop_times: list[float] = []
    n, ramp = cfg["slow"], cfg["ramp"]
    tasks = [
        asyncio.create_task(
            slow_client(
                cfg["port"],
                ramp * i / n,
                cfg["timeout"],
                stats,
                connect_times,
                drop_times,
                stop,
            )
        )
        for i in range(n)
    ]
    await asyncio.sleep(ramp + 1.0)  # every one of them has connected (or failed to)
    print("ready", flush=True)
    await asyncio.wait_for(stop.wait(), cfg["max_seconds"])
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 15)
    # the ramp's evictions: the k-th drop made room for the (limit + k)-th connect
    limit = cfg["limit"]
    ramp_connects = connect_times[limit:n]
    stats.eviction_delays = [
        drop - made for made, drop in zip(ramp_connects, drop_times, strict=False)
    ]
    return asdict(stats)


def start_slow_worker(cfg: dict[str, Any]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--worker", json.dumps(cfg)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        preexec_fn=raise_fd_limit,
    )
    children.append(proc)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "ready" (bounded by the worker's own deadline)
    if line.strip() != b"ready":
        proc.kill()
        raise RuntimeError(f"slow-client worker failed to start: {line!r}")
    return proc


def stop_slow_worker(proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


# -- honest registrations ----------------------------------------------------------


async def register_once(port: int, peer_id: str) -> float:
    """Seconds from connect to a 101 with code 0 (raises on anything else)."""
    started = time.perf_counter()
    ws = await connect(lambda: LeanWs(HOST, port, "/register"), HOST, port, timeout=30)
    try:
        frame = client_frame(rtc_request(INIT, peer_id, "", None))
        reply = json.loads(await ws.request(frame, 30))
        payload = json.loads(base64.b64decode(reply["payload"]))
        if reply["command"] != INIT_RESPONSE or payload["code"] != 0:
            raise RuntimeError(f"registration refused: {reply} {payload}")
        return time.perf_counter() - started
    finally:
        ws.close()


async def registrations(port: int, n: int, spacing: float, tag: str) -> tuple[list[float], int]:
    """``n`` registrations, one every ``spacing`` s: their times (s) and the failures."""
    times: list[float] = []
    failed = 0
    for i in range(n):
        began = time.monotonic()
        try:
            times.append(await register_once(port, f"honest-{tag}-{i}"))
        except (OSError, RuntimeError, TimeoutError, ConnectionError) as exc:
            failed += 1
            print(f"registration failed: {exc!r}", file=sys.stderr)
        await asyncio.sleep(max(0.0, spacing - (time.monotonic() - began)))
    return times, failed


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def sample_fds(pid: int, out: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(OSError):
            out.append(open_fds(pid))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.25)


# -- the full server: 503 at once --------------------------------------------------


async def full_server_refusals(port: int, limit: int, extra: int) -> tuple[int, list[float]]:
    """Fill every slot with handshaken connections, then open ``extra`` more:
    how many got 503, and how soon (s)."""
    held: list[LeanWs] = []
    try:
        for i in range(0, limit, 100):  # a hundred handshakes at a time
            batch = [
                connect(lambda: LeanWs(HOST, port, "/register"), HOST, port, timeout=30)
                for _ in range(min(100, limit - i))
            ]
            held += await asyncio.gather(*batch)

        async def one() -> float | None:
            started = time.perf_counter()
            reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 10)
            try:
                data = await asyncio.wait_for(reader.read(4096), 10)
                return time.perf_counter() - started if data.startswith(b"HTTP/1.1 503") else None
            finally:
                writer.close()

        answers = await asyncio.gather(*(one() for _ in range(extra)), return_exceptions=True)
        times = [a for a in answers if isinstance(a, float)]
        return len(times), times
    finally:
        for ws in held:
            ws.close()


# -- the benchmark -----------------------------------------------------------------


def read_log(server: ServerProc) -> str:
    return Path(server.stderr_path).read_text(errors="replace")


def log_problems(text: str) -> tuple[int, int]:
    """Tracebacks and ERROR lines in a server log."""
    return text.count("Traceback (most recent call last)"), sum(
        1 for line in text.splitlines() if " ERROR " in line
    )


def ms(values: list[float]) -> str:
    return f"{1e3 * statistics.median(values):.1f}" if values else "-"


async def bench(args: argparse.Namespace) -> None:
    server: ServerProc = _start(
        "rtc-signal",
        [
            *console_script("rtc-signal"),
            "serve",
            "--port",
            "0",
            "--max-connections",
            str(args.limit),
            "--log-level",
            "info",
        ],
    )
    port = server.port
    cfg = {
        "port": port,
        "slow": args.slow,
        "limit": args.limit,
        "ramp": args.ramp,
        "timeout": 10.0,
        "max_seconds": args.time_limit,
    }
    medians: dict[bool, list[float]] = {False: [], True: []}
    every: dict[bool, list[float]] = {False: [], True: []}
    failures = {False: 0, True: 0}
    slow_totals: dict[str, Any] = {}
    fds: list[int] = []
    try:
        for run in range(args.runs):
            for loaded in (False, True):
                worker = start_slow_worker(cfg) if loaded else None
                stop = asyncio.Event()
                sampler = asyncio.create_task(sample_fds(server.pid, fds, stop))
                try:
                    times, failed = await registrations(
                        port,
                        args.registrations,
                        args.spacing,
                        f"{run}-{'loaded' if loaded else 'unloaded'}",
                    )
                finally:
                    stop.set()
                    await sampler
                    stats = stop_slow_worker(worker) if worker is not None else {}
                for key, value in stats.items():
                    slow_totals[key] = slow_totals.get(key, 0 if key != "eviction_delays" else [])
                    slow_totals[key] += value
                if times:
                    medians[loaded].append(statistics.median(times))
                every[loaded] += times
                failures[loaded] += failed
                await asyncio.sleep(args.timeout_wait)  # the slow ones' leftovers are gone
        refused, refusal_times = await full_server_refusals(port, args.limit, args.extra)
        await asyncio.sleep(1.0)
        server_log = read_log(server)
        alive = server.proc.poll() is None
    finally:
        server.stop()
    tracebacks, errors = log_problems(server_log)

    print(
        f"# Slowloris ({args.runs} runs, {args.slow} slow clients vs --max-connections "
        f"{args.limit}, {args.registrations} registrations per phase)\n"
    )
    print(f"Machine: {machine('websockets')}\n")
    base = statistics.median(medians[False]) if medians[False] else float("nan")
    rows = []
    for loaded in (False, True):
        med = statistics.median(medians[loaded]) if medians[loaded] else float("nan")
        rows.append(
            [
                f"{args.slow} slow clients" if loaded else "no slow clients (baseline)",
                f"{1e3 * med:.1f}",
                " ".join(f"{1e3 * m:.1f}" for m in medians[loaded]),
                f"{1e3 * max(every[loaded]):.1f}" if every[loaded] else "-",
                f"{len(every[loaded])}/{len(every[loaded]) + failures[loaded]}",
                f"{med / base:.2f}x",
            ]
        )
    print(
        table(
            [
                "phase",
                "median ms",
                "per-run medians ms",
                "slowest ms",
                "registered",
                "vs baseline",
            ],
            rows,
        )
    )
    delays = slow_totals.get("eviction_delays", [])
    print(
        f"\nServer log: {tracebacks} tracebacks, {errors} ERROR lines; server alive: "
        f"{'yes' if alive else 'NO'}; its open fds (sampled): max {max(fds) if fds else '-'}."
    )
    print(
        f"Slow clients (all runs): {slow_totals.get('connects', 0)} connects, "
        f"{slow_totals.get('connect_errors', 0)} connect errors, "
        f"{slow_totals.get('evicted', 0)} dropped to make room, "
        f"{slow_totals.get('timed_out', 0)} dropped at the handshake timeout, "
        f"{slow_totals.get('refused_503', 0)} x 503, "
        f"{slow_totals.get('other_replies', 0)} other replies."
    )
    if delays:
        print(
            f"Ramp past the limit: the oldest slow client was dropped a median "
            f"{ms(delays)} ms (max {1e3 * max(delays):.1f} ms) after the connect that made "
            f"room ({len(delays)} drops)."
        )
    print(
        f"Full server (every slot handshaken): {refused}/{args.extra} new connections got "
        f"503, median {ms(refusal_times)} ms after connect "
        f"(max {1e3 * max(refusal_times):.1f} ms)."
        if refusal_times
        else f"Full server: 0/{args.extra} new connections got 503."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--slow", type=int, default=1300)
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--registrations", type=int, default=20)
    parser.add_argument("--spacing", type=float, default=0.6, help="seconds between two")
    parser.add_argument("--ramp", type=float, default=3.0, help="seconds to connect the slow")
    parser.add_argument("--extra", type=int, default=300, help="connections to a full server")
    parser.add_argument("--timeout-wait", type=float, default=2.0, help=argparse.SUPPRESS)
    parser.add_argument("--time-limit", type=float, default=900)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    raise_fd_limit()
    if args.worker:
        print(json.dumps(asyncio.run(slow_worker(json.loads(args.worker)))), flush=True)
        return 0
    guard_children(args.time_limit)
    asyncio.run(bench(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
