"""Data-channel speed between two peer processes: asyncio vs uvloop, tuning off vs on.

Usage::

    python benchmarks/speed.py [--runs 5] [--seconds 3] [--sizes 16 64]
                               [--loops asyncio uvloop] [--tuning off on]

Everything runs on loopback (host candidates on 127.0.0.1 only, no ICE
server). One ``rtc-signal serve``; per configuration (event loop x tuning) one
*sink* answer peer process (library API, :class:`peers.AnswerPeer`, as
``rtc-peer answer``); per measurement a fresh *source* offer peer process
(``peers.call``, as ``rtc-peer offer``) that

1. measures the round trip of 32-character text messages sent one at a time
   and echoed by the sink (20 warm-up round trips, then ``--rtt-messages``);
2. sends binary messages of each ``--sizes`` KiB through ``Channel.send`` (its
   backpressure) for ``--seconds``, then the text ``end``; the sink answers
   ``got N`` once it has read the N bytes before it, and the figure is
   N / (time from the first send to that answer).

Both processes run the same event loop (``asyncio.run`` or ``uvloop.run``).
Tuning (:mod:`peers.tuning`) is switched with its environment variables:
``off`` = ``RTC_PEER_NO_TUNING=1``, ``on`` = every tweak, anything else is a
``+``-joined list of tweak names given as ``RTC_PEER_TUNING``, and
``all-name`` (or ``all-a+b``) is every tweak but those (for measuring one
tweak at a time, e.g. ``--tuning off on all-delayed_sack``).

Each figure is the median of ``--runs`` runs (min-max shown), after one
shorter warm-up run that is not counted. Runs are interleaved (run 1 of every
configuration, then run 2, ..., in a rotating order) so that load from other
sessions on this shared machine hits every configuration alike; the ratio
column is the median of per-run ratios against the first configuration. The
``others`` column is the CPU the rest of the machine used during the
transfers (from /proc/stat, minus both peers), in % of one core; ``CPU ms/MB``
(CPU time each peer spent per MB moved) bounds the throughput of these
CPU-bound transfers and depends much less than MB/s on that load. ``UDP
drops`` are datagrams the kernel dropped on each peer's socket (receive buffer
full). The default run takes ~160 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

from _common import (  # noqa: E402  (this folder is on sys.path)
    Helper,
    guard_children,
    machine,
    spawn,
    start_server,
    stop_children,
    table,
)
from _common import logs as _logs  # noqa: E402
from datachannel import _cpu_seconds, ice_ports, udp_drops  # noqa: E402

from rtc_signal.peers import AnswerPeer, Call, IceSettings, PeerConfig, call, tuning  # noqa: E402

HOST = "127.0.0.1"
ICE = IceSettings(host_addresses=(HOST,))  # never any ICE server
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- the two peer processes ----------------------------------------------------------


def _runner(loop: str) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    if loop == "uvloop":
        import uvloop

        return uvloop.run
    return asyncio.run


async def _sink_call(c: Call) -> None:
    """Count binary bytes; ``end`` -> ``got N``; echo any other text."""
    received = 0
    async for message in c.channel:
        if isinstance(message, bytes):
            received += len(message)
        elif message == "end":
            await c.channel.send(f"got {received}")
            received = 0
        else:
            await c.channel.send(message)


def child_sink(args: argparse.Namespace) -> int:
    config = PeerConfig(signal_url=args.signal, ice=ICE, connect_timeout=args.timeout)
    peer = AnswerPeer(
        config,
        args.id,
        on_registered=lambda url: print("sink: registered", file=sys.stderr, flush=True),
    )
    with contextlib.suppress(KeyboardInterrupt):
        _runner(args.loop)(peer.serve(_sink_call))
    return 0


def _machine_busy() -> float:
    """Busy CPU seconds of the whole machine so far (all cores)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / CLK_TCK


async def _source(args: argparse.Namespace) -> dict[str, Any]:
    config = PeerConfig(signal_url=args.signal, ice=ICE, connect_timeout=args.timeout)
    result: dict[str, Any] = {}
    async with asyncio.timeout(args.timeout + args.seconds + 30), call(config, args.target) as c:
        channel = c.channel
        result["setup_ms"] = c.setup_seconds * 1e3
        # 1. round trips
        samples = []
        for i in range(args.rtt_messages + 20):
            ping = f"ping {i:027d}"  # 32 characters
            t0 = time.perf_counter()
            await channel.send(ping)
            reply = await asyncio.wait_for(channel.receive(), args.timeout)
            if i >= 20:
                samples.append(time.perf_counter() - t0)
            if reply != ping:
                raise RuntimeError(f"sink echoed {reply!r:.60}")
        result["rtt_us"] = statistics.median(samples) * 1e6
        # 2. bulk transfer
        if args.water:  # experiment: other Channel.send thresholds (KiB)
            high, low = (int(x) * 1024 for x in args.water.split(":"))
            channel.high_water = high
            channel.dc.bufferedAmountLowThreshold = low
        data = os.urandom(args.size)
        ports = ice_ports(c)
        drops0 = (udp_drops(ports[0]), udp_drops(ports[1])) if ports else (-1, -1)
        cpu0, sink0, busy0 = time.process_time(), _cpu_seconds(args.sink_pid), _machine_busy()
        t0 = time.perf_counter()
        sent = 0
        peak = 0
        end = t0 + args.seconds
        while time.perf_counter() < end:
            for _ in range(16):
                await channel.send(data)
            sent += 16 * len(data)
            peak = max(peak, channel.dc.bufferedAmount)
        await channel.send("end")
        reply = await asyncio.wait_for(channel.receive(), args.timeout)
        seconds = time.perf_counter() - t0
        if reply != f"got {sent}":
            raise RuntimeError(f"sink replied {reply!r:.60}, expected 'got {sent}'")
        cpu = time.process_time() - cpu0
        sink_cpu = _cpu_seconds(args.sink_pid) - sink0
        busy = _machine_busy() - busy0
        if ports:
            drops1 = (udp_drops(ports[0]), udp_drops(ports[1]))
            result["drops"] = [drops1[0] - drops0[0], drops1[1] - drops0[1]]
        else:
            result["drops"] = [-1, -1]
        result.update(
            mbps=sent / seconds / 1e6,
            seconds=seconds,
            source_cpu=cpu / seconds,
            sink_cpu=sink_cpu / seconds,
            others_cpu=max(0.0, busy - cpu - sink_cpu) / seconds,
            peak_buffered=peak,
            tuning=",".join(tuning.applied()) or "none",
        )
        await channel.close(2.0)
    return result


def child_source(args: argparse.Namespace) -> int:
    result = _runner(args.loop)(_source(args))
    print(json.dumps(result), flush=True)
    return 0


# -- the parent: configurations, interleaved runs, tables ----------------------------


@dataclass
class Config:
    loop: str
    tuning: str
    sink: Helper | None = None
    results: dict[int, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.loop}, tuning {self.tuning}"

    @property
    def slug(self) -> str:
        return f"sink-{self.loop}-{self.tuning.replace('+', '-')}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("RTC_PEER_NO_TUNING", None)
        env.pop("RTC_PEER_TUNING", None)
        if self.tuning == "off":
            env["RTC_PEER_NO_TUNING"] = "1"
        elif self.tuning.startswith("all-"):  # every tweak but these
            left_out = self.tuning[4:].split("+")
            env["RTC_PEER_TUNING"] = ",".join(n for n in tuning.NAMES if n not in left_out)
        elif self.tuning != "on":
            env["RTC_PEER_TUNING"] = self.tuning.replace("+", ",")
        return env


def _child_argv(role: str, loop: str, url: str, timeout: float) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--child", role, "--loop", loop,
            "--signal", url, "--timeout", str(timeout)]  # fmt: skip


def start_sink(cfg: Config, url: str, timeout: float) -> Helper:
    argv = [*_child_argv("sink", cfg.loop, url, timeout), "--id", cfg.slug]
    fd, log = tempfile.mkstemp(prefix=f"bench-speed-{cfg.slug}-", suffix=".log")
    _logs.append(log)
    try:
        proc = spawn(argv, stdout=subprocess.DEVNULL, stderr=fd, cwd=REPO, env=cfg.env())
    finally:
        os.close(fd)
    helper = Helper(cfg.slug, proc, log)
    helper.wait_line("sink: registered")
    return helper


def run_source(
    cfg: Config, url: str, size: int, seconds: float, args: argparse.Namespace
) -> dict[str, Any]:
    assert cfg.sink is not None
    argv = [
        *_child_argv("source", cfg.loop, url, args.timeout),
        "--target", cfg.slug, "--size", str(size), "--seconds", str(seconds),
        "--sink-pid", str(cfg.sink.proc.pid), "--rtt-messages", str(args.rtt_messages),
        *(["--water", args.water] if args.water else []),
    ]  # fmt: skip
    proc = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env=cfg.env(),
        cwd=REPO,
        timeout=args.timeout + seconds + 60,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"source ({cfg.name}, {size} B) failed:\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _med(values: Sequence[float], digits: int = 1) -> str:
    if not values:
        return "-"
    fmt = f"{{:,.{digits}f}}"
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-" + (
        f"{fmt.format(max(values))})"
    )


def _cpu_per_mb(results: list[dict[str, Any]], key: str) -> float:
    """Median CPU milliseconds one process spent per MB transferred: what
    bounds the throughput of a CPU-bound transfer, and much less sensitive
    than MB/s to what else runs on the machine."""
    return float(statistics.median(r[key] * 1e3 / r["mbps"] for r in results))


def report(configs: list[Config], sizes: list[int], args: argparse.Namespace) -> None:
    base = configs[0]
    for size in sizes:
        rows = []
        for cfg in configs:
            res = cfg.results[size]
            ratios = [r["mbps"] / b["mbps"] for r, b in zip(res, base.results[size], strict=False)]
            rows.append(
                [
                    cfg.name,
                    _med([r["mbps"] for r in res]),
                    f"{statistics.median(ratios):.2f}x" if ratios else "-",
                    _med([r["rtt_us"] for r in res], 0),
                    f"{statistics.median(r['source_cpu'] for r in res) * 100:.0f}% / "
                    f"{statistics.median(r['sink_cpu'] for r in res) * 100:.0f}%",
                    f"{_cpu_per_mb(res, 'source_cpu'):.0f} / {_cpu_per_mb(res, 'sink_cpu'):.0f}",
                    f"{statistics.median(r['others_cpu'] for r in res) * 100:.0f}%",
                    " ".join(f"{r['drops'][0]}/{r['drops'][1]}" for r in res),
                    f"{max(r['peak_buffered'] for r in res) / 2**20:.1f}",
                ]
            )
        print(
            f"\n## {size // 1024} KiB messages, Channel.send for {args.seconds:g} s "
            f"(median of {args.runs} runs, min-max)\n"
        )
        headers = [
            "loop, tuning",
            "MB/s",
            f"vs {base.name}",
            "RTT us",
            "CPU src / sink",
            "CPU ms/MB src / sink",
            "others",
            "UDP drops src/sink",
            "peak buffered MiB",
        ]
        print(table(headers, rows, numbers_right=True))
    applied = {cfg.name: cfg.results[sizes[0]][0].get("tuning", "?") for cfg in configs}
    print("\nTweaks applied (as reported by peers.tuning.applied() in the source):")
    for name, tweaks in applied.items():
        print(f"  {name}: {tweaks}")
    sys.stdout.flush()


def parent(args: argparse.Namespace) -> int:
    guard_children(args.time_limit)
    started = time.monotonic()
    server, url = start_server()
    print(f"# data-channel speed ({args.runs} runs, loopback only)\n")
    print(f"Machine: {machine()}")
    print("Load average at start (1/5/15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    sys.stdout.flush()
    sizes = [kib * 1024 for kib in args.sizes]
    configs = [Config(loop, tuning) for loop in args.loops for tuning in args.tuning]
    try:
        for cfg in configs:
            cfg.sink = start_sink(cfg, url, args.timeout)
            cfg.results = {size: [] for size in sizes}
        for run in range(args.runs + 1):  # run 0: warm-up
            seconds = args.seconds if run else min(1.0, args.seconds)
            order = configs[run % len(configs) :] + configs[: run % len(configs)]
            for cfg in order:
                for size in sizes:
                    result = run_source(cfg, url, size, seconds, args)
                    if run:
                        cfg.results[size].append(result)
                    if args.verbose:
                        print(f"  run {run} {cfg.name} {size // 1024} KiB: "
                              f"{result['mbps']:.1f} MB/s, RTT {result['rtt_us']:.0f} us, "
                              f"others {result['others_cpu'] * 100:.0f}%",
                              file=sys.stderr, flush=True)  # fmt: skip
            for cfg in configs:
                assert cfg.sink is not None
                cfg.sink.check_alive()
        server.check_alive()
        report(configs, sizes, args)
        if args.json:
            Path(args.json).write_text(
                json.dumps({cfg.name: cfg.results for cfg in configs}, indent=1)
            )
    finally:
        signal.alarm(0)
        stop_children()
    print(
        f"\nTotal time: {time.monotonic() - started:.0f} s; load average at the end: "
        "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (median)")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per transfer")
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 64], help="KiB per message")
    parser.add_argument("--loops", nargs="+", default=["asyncio", "uvloop"],
                        choices=["asyncio", "uvloop"])  # fmt: skip
    parser.add_argument("--tuning", nargs="+", default=["off", "on"],
                        help="off, on, or tweak names joined with +")  # fmt: skip
    parser.add_argument("--rtt-messages", type=int, default=200, help="round trips per run")
    parser.add_argument("--timeout", type=float, default=30, help="seconds for any one wait")
    parser.add_argument("--time-limit", type=float, default=900, help="seconds for everything")
    parser.add_argument("--json", help="also write every result to this file")
    parser.add_argument(
        "--water",
        metavar="HIGH:LOW",
        help="Channel.send thresholds in KiB for the sender (default: peers.channel's)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print each run")
    # child roles (started by the parent)
    parser.add_argument("--child", choices=["sink", "source"], help=argparse.SUPPRESS)
    parser.add_argument("--loop", default="asyncio", help=argparse.SUPPRESS)
    parser.add_argument("--signal", help=argparse.SUPPRESS)
    parser.add_argument("--id", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--sink-pid", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "sink":
        return child_sink(args)
    if args.child == "source":
        return child_source(args)
    if args.runs < 1 or args.seconds <= 0 or min(args.sizes) < 1:
        parser.error("--runs, --seconds and --sizes must be positive")
    return parent(args)


if __name__ == "__main__":
    sys.exit(main())
