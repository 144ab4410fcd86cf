"""`rtc-peer bench` against a real `rtc-peer answer`, with a websockets baseline.

Usage: ``python benchmarks/bench_cli.py [--runs 5] [--sizes 16384 65536 262144]
[--seconds 2] [--time-limit 600]``

Starts ``rtc-signal serve --port 0``, ``rtc-peer answer --id bench-target
--host-address 127.0.0.1 --interval 0`` and the websockets baseline server of
``_sink_answer.py --baseline``, then runs, ``--runs`` times for each message
size (interleaved: run 1 of every size, then run 2, ..., sizes in a rotating
order, so that drift on the shared machine hits all alike):

- ``rtc-peer bench --json --seconds S --size B`` (a fresh process each time):
  setup (offer sent -> channel open), throughput of the reliable ordered
  channel until the receiver acknowledged the bytes, RTT p50/p99 of 32-byte
  ping-pongs (see peers/bench.py);
- the same measurement over websockets between two processes (a fresh
  ``--worker`` process each time, the same event-loop choice as rtc-peer):
  setup = TCP connect + HTTP upgrade; the same 32-byte text pings (10
  warm-up, up to 500, stopping after S seconds once 200 are timed) echoed by
  ``/echo``; S seconds of B-byte binary messages to ``/sink``, in pipelined
  ``expect N`` blocks, timed until its last ``got N``.

Prints medians (min-max) and the median of the per-run ratios rtc-peer /
websockets. Loopback only; no ICE server. Bounded: every child has a timeout,
the whole run has ``--time-limit`` (SIGALRM), and every child is killed at the
end, whatever happens. A size the answer peer does not accept (larger than its
``a=max-message-size``) is reported as skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import _common
from _common import (
    HOST,
    ServerProc,
    console_script,
    machine,
    set_deadline,
    start_rtc_signal,
    stop_children,
    table,
)
from _common import children as _children
from _common import logs as _logs

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TARGET = "bench-target"
KEYS = ("setup_ms", "throughput_MBps", "rtt_p50_ms", "rtt_p99_ms")
#: the rtc-peer bench protocol's RTT rules, mirrored by the websockets worker
PING_SIZE, RTT_WARMUP, RTT_MIN, RTT_MAX = 32, 10, 200, 500
#: bytes per ``expect N`` block of the websockets baseline (rounded to messages)
WS_BLOCK = 4 << 20


# -- children: all tracked, all stopped -----------------------------------------------


def _spawn_logged(name: str, argv: Sequence[str]) -> tuple[subprocess.Popen[bytes], str]:
    """Start a long-running child whose stderr goes to a log file."""
    fd, log = tempfile.mkstemp(prefix=f"bench-cli-{name}-", suffix=".log")
    _logs.append(log)
    try:
        proc = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=fd, cwd=REPO
        )
    finally:
        os.close(fd)
    _children.append(proc)
    return proc, log


def _wait_line(proc: subprocess.Popen[bytes], log: str, prefix: str, timeout: float = 20) -> str:
    """The first line of ``log`` starting with ``prefix`` (bounded wait)."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = Path(log).read_text(errors="replace")
        for line in text.splitlines():
            if line.startswith(prefix):
                return line
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    raise RuntimeError(f"{prefix!r} not seen (exit status {proc.poll()}):\n{text[-2000:]}")


def event_loop() -> str:
    """What rtc-peer runs on: peers/cli.py uses uvloop.run when uvloop imports."""
    if importlib.util.find_spec("uvloop") is None:
        return "asyncio (uvloop not installed)"
    return f"uvloop {version('uvloop')} (rtc-peer uses uvloop.run)"


_TUNING_PROBE = """
import rtc_signal.peers.session  # applies peers/tuning.py, if present, as rtc-peer does
try:
    from rtc_signal.peers.tuning import applied
except ImportError:
    print("none (no peers/tuning.py)")
else:
    print(", ".join(applied()) or "none applied")
"""


def aiortc_tuning() -> str:
    """The aiortc/aioice speed-ups rtc-peer runs with (peers/tuning.py, if any;
    asked of a fresh interpreter with our environment, as rtc-peer would)."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _TUNING_PROBE],
            capture_output=True,
            timeout=30,
            check=False,
            cwd=REPO,
        )
    except subprocess.TimeoutExpired:
        return "unknown (probe timed out)"
    out = proc.stdout.decode(errors="replace").strip()
    return out if proc.returncode == 0 and out else f"unknown (probe exit {proc.returncode})"


# -- the websockets baseline (run as ``--worker CFG``) ---------------------------------


Runner = Callable[[Coroutine[Any, Any, dict[str, float]]], dict[str, float]]


def _runner() -> Runner:
    """The same event-loop choice as rtc-peer, for a like-for-like baseline."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    # Annotated, not cast: uvloop may be typed (installed) or Any (not).
    runner: Runner = uvloop.run
    return runner


def _percentile(sorted_values: list[float], fraction: float) -> float:
    return sorted_values[max(1, math.ceil(fraction * len(sorted_values))) - 1]


async def ws_bench(port: int, seconds: float, size: int, timeout: float) -> dict[str, float]:
    """The four figures of rtc-peer bench, measured over websockets."""
    from websockets.asyncio.client import connect

    base = f"ws://{HOST}:{port}"
    async with asyncio.timeout(timeout):
        t0 = time.perf_counter()
        echo = await connect(base + "/echo", compression=None, open_timeout=timeout)
        setup = time.perf_counter() - t0
        try:
            samples: list[float] = []
            started = time.perf_counter()
            for n in range(RTT_WARMUP + RTT_MAX):
                ping = f'{{"op":"ping","n":{n}}}'.ljust(PING_SIZE)
                t0 = time.perf_counter()
                await echo.send(ping)
                pong = await echo.recv()
                t1 = time.perf_counter()
                if pong != ping:
                    raise RuntimeError(f"websockets echo sent back {pong!r:.60}")
                if n >= RTT_WARMUP:
                    samples.append(t1 - t0)
                    if len(samples) >= RTT_MIN and t1 - started > seconds:
                        break
        finally:
            await echo.close()
        samples.sort()

        data = os.urandom(size)
        per_block = max(1, WS_BLOCK // size)
        block = per_block * size
        # max_queue=None: the "got N" replies pile up unread until the end.
        async with connect(base + "/sink", compression=None, max_queue=None) as sink:
            blocks = 0
            started = time.perf_counter()
            stop = started + seconds
            while time.perf_counter() < stop:
                await sink.send(f"expect {block}")
                for _ in range(per_block):
                    await sink.send(data)
                blocks += 1
            for _ in range(blocks):
                reply = await sink.recv()
                if reply != f"got {block}":
                    raise RuntimeError(f"websockets sink replied {reply!r:.60}")
            elapsed = time.perf_counter() - started
    return {
        "setup_ms": setup * 1e3,
        "throughput_MBps": blocks * block / elapsed / 1e6,
        "rtt_p50_ms": _percentile(samples, 0.50) * 1e3,
        "rtt_p99_ms": _percentile(samples, 0.99) * 1e3,
    }


def worker(cfg: dict[str, Any]) -> int:
    result = _runner()(ws_bench(cfg["port"], cfg["seconds"], cfg["size"], cfg["timeout"]))
    print(json.dumps(result))
    return 0


# -- measurements ---------------------------------------------------------------------


class Skipped(Exception):
    """rtc-peer bench refused the size (the answer peer's max message size)."""


def run_rtc_peer(url: str, seconds: float, size: int, timeout: float) -> dict[str, float]:
    argv = [
        *console_script("rtc-peer"),
        "bench",
        "--target",
        TARGET,
        "--signal",
        url,
        "--host-address",
        HOST,
        "--json",
        "--seconds",
        str(seconds),
        "--size",
        str(size),
    ]
    proc = subprocess.run(argv, capture_output=True, timeout=timeout, check=False, cwd=REPO)
    err = proc.stderr.decode(errors="replace").strip()
    if proc.returncode != 0:
        if "is larger than" in err:
            raise Skipped(err.splitlines()[-1])
        raise RuntimeError(f"rtc-peer bench failed ({proc.returncode}):\n{err[-2000:]}")
    result: dict[str, float] = json.loads(proc.stdout)
    if set(result) != set(KEYS):
        raise RuntimeError(f"rtc-peer bench printed {result!r}")
    return result


def run_ws(port: int, seconds: float, size: int, timeout: float) -> dict[str, float]:
    cfg = {"port": port, "seconds": seconds, "size": size, "timeout": timeout - 5}
    result = _common.run_worker(__file__, cfg, timeout)
    return {key: float(result[key]) for key in KEYS}


@dataclass
class Cell:
    """Per-run figures of one (size, row) of the table."""

    runs: list[dict[str, float]] = field(default_factory=list)

    def fmt(self, key: str, digits: int) -> str:
        values = [run[key] for run in self.runs]
        if not values:
            return "-"
        median, lo, hi = statistics.median(values), min(values), max(values)
        return f"{median:,.{digits}f} ({lo:,.{digits}f}-{hi:,.{digits}f})"


DIGITS = {"setup_ms": 1, "throughput_MBps": 2, "rtt_p50_ms": 3, "rtt_p99_ms": 3}


def _size_label(size: int) -> str:
    return f"{size // 1024} KiB" if size % 1024 == 0 else f"{size} B"


def bench(args: argparse.Namespace) -> None:
    timeout = args.seconds * 2 + 60  # start-up, setup, RTT, burst and drain, generously
    server: ServerProc | None = None
    try:
        server = start_rtc_signal()
        answer, answer_log = _spawn_logged(
            "answer",
            [
                *console_script("rtc-peer"),
                "answer",
                "--id",
                TARGET,
                "--host-address",
                HOST,
                "--interval",
                "0",
                "--signal",
                server.url,
            ],
        )
        baseline, baseline_log = _spawn_logged(
            "baseline", [sys.executable, str(HERE / "_sink_answer.py"), "--baseline"]
        )
        _wait_line(answer, answer_log, "rtc-peer: registered as")
        ws_port = int(_wait_line(baseline, baseline_log, "baseline: tcp").split()[4])

        print(
            f"# rtc-peer bench vs websockets: {args.runs} interleaved runs of "
            f"{args.seconds:g} s per size, medians (min-max)\n"
        )
        print(f"Event loop: {event_loop()}; the websockets worker uses the same")
        print(f"aiortc tuning in rtc-peer: {aiortc_tuning()}")
        print(f"Machine: {machine('aiortc', 'aioice', 'websockets')}")
        print("Load average at start (1/5/15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
        sys.stdout.flush()

        # Warm-up (not counted): the first processes pay for cold imports.
        run_rtc_peer(server.url, 0.3, args.sizes[0], timeout)
        run_ws(ws_port, 0.3, args.sizes[0], timeout)

        peer = {size: Cell() for size in args.sizes}
        ws = {size: Cell() for size in args.sizes}
        skipped: dict[int, str] = {}
        started = time.monotonic()
        for run in range(args.runs):
            rotation = args.sizes[run % len(args.sizes) :] + args.sizes[: run % len(args.sizes)]
            for size in rotation:
                if size in skipped:
                    continue
                try:
                    peer[size].runs.append(run_rtc_peer(server.url, args.seconds, size, timeout))
                except Skipped as exc:
                    skipped[size] = str(exc)
                    continue
                ws[size].runs.append(run_ws(ws_port, args.seconds, size, timeout))
            for proc, log, name in ((answer, answer_log, "answer"), (baseline, baseline_log, "ws")):
                if proc.poll() is not None:
                    tail = Path(log).read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"the {name} process exited ({proc.returncode}):\n{tail}")

        rows = []
        for size in args.sizes:
            if size in skipped:
                rows.append([_size_label(size), "skipped (see below)", "-", "-", "-", "-"])
                continue
            rows.append(
                [_size_label(size), "rtc-peer bench", *(peer[size].fmt(k, DIGITS[k]) for k in KEYS)]
            )
            rows.append(
                [_size_label(size), "websockets", *(ws[size].fmt(k, DIGITS[k]) for k in KEYS)]
            )
            ratios = Cell(
                [
                    {k: p[k] / w[k] for k in KEYS}
                    for p, w in zip(peer[size].runs, ws[size].runs, strict=True)
                ]
            )
            rows.append([_size_label(size), "ratio rtc/ws", *(ratios.fmt(k, 3) for k in KEYS)])
        print(table(["size", "", "setup ms", "MB/s (10^6 B/s)", "RTT p50 ms", "RTT p99 ms"], rows))
        print(
            "\nrtc-peer setup = offer sent -> data channel open; websockets setup = TCP "
            "connect + HTTP upgrade.\nThroughput until the receiver acknowledged the bytes "
            "(delivered, not queued). Ratios: median of per-run ratios\n(MB/s: < 1 = slower "
            "than websockets; ms: > 1 = slower)."
        )
        for size, reason in skipped.items():
            print(f"{_size_label(size)} skipped: {reason}")
        print(
            f"\nMeasured in {time.monotonic() - started:.0f} s; load average at the end: "
            "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
        )
    finally:
        stop_children()
        if server is not None:
            server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per size (median)")
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[16384, 65536, 262144], help="message sizes"
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="throughput burst length")
    parser.add_argument(
        "--time-limit", type=float, default=600, help="seconds for the whole run, then stop"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(json.loads(args.worker))
    if args.runs < 1 or args.seconds <= 0 or min(args.sizes) < 1:
        parser.error("--runs and --sizes must be at least 1, --seconds positive")

    def _terminated(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds through bench()'s finally: children stopped

    signal.signal(signal.SIGTERM, _terminated)
    set_deadline(args.time_limit)  # SIGALRM raises TimeoutError, same unwinding
    try:
        bench(args)
    except KeyboardInterrupt:
        return 130
    except TimeoutError as exc:  # the --time-limit deadline (children already stopped)
        print(f"bench_cli: {exc}", file=sys.stderr)
        return 3
    finally:
        signal.alarm(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
