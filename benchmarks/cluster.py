"""The signaling cluster: throughput of --workers, cross-node latency, memory.

Usage: ``python benchmarks/cluster.py [--runs 3] [--pairs 100] [--samples 300] [--peers 1000]
[--peerjs]``

Starts its own ``redis-server`` on a free loopback port (nothing persisted), then:

1. Relay throughput at ``--pairs`` pairs: one ``rtc-signal serve`` process
   (no Redis) against ``--workers 2 --redis`` on this machine's cores, with
   ``benchmarks/relay.py``'s load generator and method (interleaved runs,
   medians), and with ``--peerjs`` the PeerJS server in the same runs. With
   workers, each connection lands on either worker (SO_REUSEPORT); an offer
   peer's connection then moves to its answer peer's worker, so calls stay
   on one worker.
2. Forward latency, p50/p99: an Offer from an offer peer to an answer peer on
   the same node and on another node (two ``--redis`` processes), one at a
   time, timed from send to receipt in this process (one clock). Then the
   first Offer of fresh /offer connections, one ``--redis`` node against ``--workers
   2`` (where about half of them first move to their target's worker).
3. Memory per registered answer peer on a ``--redis`` node: the node's RSS
   and Redis's ``used_memory`` (INFO memory), before and after ``--peers``
   registrations.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (
    RTC_SIGNAL_BENCH_ARGS,
    ServerProc,
    machine,
    raise_fd_limit,
    rss_kib,
    rtc_request,
    rtc_signal_argv,
    settle_rss,
    start_command,
)
from relay import worker_config
from websockets.asyncio.client import ClientConnection, connect

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def redis_server() -> Iterator[str]:
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="bench-redis-")
    proc = subprocess.Popen(
        [
            shutil.which("redis-server") or "/usr/bin/redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            if redis_cli(port, "PING") == "PONG":
                break
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def redis_cli(port: int, *args: str) -> str:
    out = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True)
    return out.stdout.strip()


def used_memory(url: str) -> int:
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    for line in redis_cli(port, "INFO", "memory").splitlines():
        if line.startswith("used_memory:"):
            return int(line.split(":")[1])
    raise RuntimeError("no used_memory in INFO memory")


def node(url: str, name: str, *extra: str) -> ServerProc:
    argv = rtc_signal_argv(*RTC_SIGNAL_BENCH_ARGS, "--redis", url, "--node-id", name, *extra)
    return start_command(name, " ".join(argv))


# -- 1. throughput -------------------------------------------------------------------


def throughput(url: str, runs: int, pairs: int, peerjs: bool) -> None:
    # one Redis database per server under test: relay.py keeps them all running
    # and reuses peer IDs (pub/sub channels are per node ID, unique anyway)
    base = url.rsplit("/", 1)[0]
    workers = " ".join(
        rtc_signal_argv(*RTC_SIGNAL_BENCH_ARGS, "--workers", "2", "--redis", f"{base}/2")
    )
    one_node = " ".join(rtc_signal_argv(*RTC_SIGNAL_BENCH_ARGS, "--redis", f"{base}/1"))
    argv = [
        sys.executable,
        os.path.join(HERE, "relay.py"),
        "--servers",
        "rtc-signal",
        *(["peerjs"] if peerjs else []),
        "--runs",
        str(runs),
        "--pairs",
        str(pairs),
        "--baseline",
        "rtc-signal",
        "--extra",
        f"1-node+redis={one_node}",
        "--extra",
        f"workers-2={workers}",
    ]
    print("## 1. relay throughput (benchmarks/relay.py's load generator)\n", flush=True)
    subprocess.run(argv, check=True, timeout=3600)


# -- 2. latency ------------------------------------------------------------------------


async def latency(url_a: str, url_b: str, samples: int) -> dict[str, list[float]]:
    """Offer -> answer peer times (ms): answer peer on A, callers on A and on B."""
    results: dict[str, list[float]] = {}
    async with connect(url_a + "/register", compression=None, ping_interval=None) as bob:
        await bob.send(rtc_request(1, "bob", "", None))
        await bob.recv()
        for name, url in (("same node", url_a), ("cross node", url_b)):
            times: list[float] = []
            async with connect(url + "/offer", compression=None, ping_interval=None) as alice:
                frame = rtc_request(3, f"caller-{name[0]}", "bob", b'{"type":"offer","sdp":""}')
                for i in range(samples + 20):
                    start = time.perf_counter()
                    await alice.send(frame)
                    await bob.recv()
                    if i >= 20:  # warm-up
                        times.append((time.perf_counter() - start) * 1000)
                    await alice.recv()  # the ack
            results[name] = times
    return results


async def first_offer(url: str, samples: int) -> list[float]:
    """Times (ms) from a fresh /offer connection's first Offer to its arrival at
    the answer peer: with ``--workers`` about half of these connections first
    move to the answer peer's worker (signaling/handover.py)."""
    times: list[float] = []
    async with connect(url + "/register", compression=None, ping_interval=None) as bob:
        await bob.send(rtc_request(1, "first-bob", "", None))
        await bob.recv()
        for i in range(samples):
            async with connect(url + "/offer", compression=None, ping_interval=None) as alice:
                frame = rtc_request(3, f"first-{i}", "first-bob", b'{"type":"offer","sdp":""}')
                start = time.perf_counter()
                await alice.send(frame)
                await bob.recv()
                times.append((time.perf_counter() - start) * 1000)
                await alice.recv()  # the ack
    return times


async def probe_times(url: str, samples: int) -> list[float]:
    """Times (ms) of ``GET /healthz`` on a fresh TCP connection each, to the
    end of the response (the server closes it)."""
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    times: list[float] = []
    for _ in range(samples):
        start = time.perf_counter()
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 30)
        try:
            writer.write(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            if b" 200 " not in head.split(b"\r\n", 1)[0]:
                raise RuntimeError(f"/healthz answered {head[:40]!r}")
            times.append((time.perf_counter() - start) * 1000)
        finally:
            writer.close()
    return times


async def setup_times(url: str, samples: int, tag: str) -> list[float]:
    """Times (ms) of whole call set-ups, one after another: an answer peer
    connects and registers (ack), then a caller connects to /offer and sends
    its Offer, until the answer peer has it. Each step times out after 30 s.
    The first set-up is not counted: it waits for the server's import of its
    full decoder, which starts once the server listens (SignalingServer.start)."""
    times: list[float] = []
    for i in range(-1, samples):
        start = time.perf_counter()
        async with connect(
            url + "/register", compression=None, ping_interval=None, open_timeout=30
        ) as bob:
            await bob.send(rtc_request(1, f"setup-{tag}-{i}", "", None))
            await asyncio.wait_for(bob.recv(), 30)
            async with connect(
                url + "/offer", compression=None, ping_interval=None, open_timeout=30
            ) as alice:
                body = b'{"type":"offer","sdp":""}'
                await alice.send(rtc_request(3, f"caller-{tag}-{i}", f"setup-{tag}-{i}", body))
                await asyncio.wait_for(bob.recv(), 30)
                if i >= 0:
                    times.append((time.perf_counter() - start) * 1000)
    return times


def under_load(
    server: ServerProc, pairs: int, samples: int, tag: str
) -> tuple[list[float], list[float]]:
    """:func:`setup_times` and :func:`probe_times` while ``relay.py``'s load
    generator keeps ``server`` busy with ``pairs`` pairs (started first; its
    measurement window covers them)."""
    cfg = worker_config(
        "rtc-signal", server, pairs, window=32, warmup=0.5, duration=60.0, tag=f"load-{tag}"
    )
    load = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "relay.py"), "--worker", json.dumps(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(6)  # its pairs set up and flowing (relay.py waits for every pair)
        if load.poll() is not None:
            raise RuntimeError(f"the load generator exited early ({load.returncode})")
        setups = asyncio.run(setup_times(server.url, samples, tag))
        return setups, asyncio.run(probe_times(server.url, samples))
    finally:
        load.kill()
        load.wait(timeout=10)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- 3. memory ---------------------------------------------------------------------------


async def register_many(url: str, count: int) -> list[ClientConnection]:
    conns = []
    for i in range(count):
        ws = await connect(url + "/register", compression=None, ping_interval=None)
        await ws.send(rtc_request(1, f"peer-{i:06d}", "", None))
        await ws.recv()
        conns.append(ws)
    return conns


async def memory(url: str, redis_url: str, pid: int, peers: int) -> tuple[float, float]:
    warm = await register_many(url, 20)
    for ws in warm:
        await ws.close()
    await asyncio.sleep(0.5)
    rss0, redis0 = await settle_rss(pid, 5), used_memory(redis_url)
    conns = await register_many(url, peers)
    rss1, redis1 = await settle_rss(pid, 10), used_memory(redis_url)
    for ws in conns:
        await ws.close()
    return (rss1 - rss0) * 1024 / peers, (redis1 - redis0) / peers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--peers", type=int, default=1000)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument(
        "--setup-samples",
        type=int,
        default=20,
        help="call set-ups timed per server, idle and under load (0: skip section 2c)",
    )
    parser.add_argument(
        "--peerjs",
        action="store_true",
        help="also measure the PeerJS server in the throughput runs (npm install on first use)",
    )
    args = parser.parse_args()
    raise_fd_limit()
    print(machine("redis"), flush=True)
    with redis_server() as url:
        if not args.skip_throughput:
            throughput(url, args.runs, args.pairs, args.peerjs)
        a, b = node(url, "bench-a"), node(url, "bench-b")
        try:
            lat = asyncio.run(latency(a.url, b.url, args.samples))
            print("\n## 2. forward latency, Offer sent -> received by the answer peer (ms)\n")
            print("| path | p50 | p99 | samples |\n| --- | ---: | ---: | ---: |")
            for name, times in lat.items():
                p50, p99 = statistics.median(times), percentile(times, 0.99)
                print(f"| {name} | {p50:.3f} | {p99:.3f} | {len(times)} |")
        finally:
            a.stop()
            b.stop()
        one = node(url, "bench-one")
        two = start_command(
            "workers",
            " ".join(rtc_signal_argv(*RTC_SIGNAL_BENCH_ARGS, "--redis", url, "--workers", "2")),
        )
        try:
            rows = {
                "one --redis node": asyncio.run(first_offer(one.url, args.samples // 2)),
                "--workers 2": asyncio.run(first_offer(two.url, args.samples // 2)),
            }
        finally:
            one.stop()
            two.stop()
        print("\n## 2b. a call's first Offer on a fresh /offer connection (ms)\n")
        print("| server | p50 | p90 | p99 | samples |\n| --- | ---: | ---: | ---: | ---: |")
        for name, times in rows.items():
            p50, p90, p99 = (percentile(times, q) for q in (0.5, 0.9, 0.99))
            print(f"| {name} | {p50:.3f} | {p90:.3f} | {p99:.3f} | {len(times)} |")
        if args.setup_samples:
            servers: dict[str, Callable[[], ServerProc]] = {
                "one process, no Redis": lambda: start_command(
                    "one", " ".join(rtc_signal_argv(*RTC_SIGNAL_BENCH_ARGS))
                ),
                "one --redis node": lambda: node(url, "bench-load"),
                "--workers 2": lambda: start_command(
                    "workers",
                    " ".join(
                        rtc_signal_argv(*RTC_SIGNAL_BENCH_ARGS, "--redis", url, "--workers", "2")
                    ),
                ),
            }
            loaded: dict[str, tuple[list[float], list[float]]] = {}
            probes: dict[str, tuple[list[float], list[float]]] = {}
            for name, start in servers.items():
                server = start()
                try:
                    idle = asyncio.run(setup_times(server.url, args.setup_samples, "idle"))
                    idle_probes = asyncio.run(probe_times(server.url, args.setup_samples))
                    busy, busy_probes = under_load(server, args.pairs, args.setup_samples, "busy")
                    loaded[name] = (idle, busy)
                    probes[name] = (idle_probes, busy_probes)
                finally:
                    server.stop()
            print(
                f"\n## 2c. a whole call set-up (register, connect, first Offer delivered; ms), "
                f"idle and while {args.pairs} pairs relay at full speed\n"
            )
            print(
                "| server | idle p50 | idle p90 | loaded p50 | loaded p90 | loaded max "
                "| samples |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
            )
            for table in (loaded, probes):
                if table is probes:
                    print("\n`GET /healthz` on a fresh connection (ms), the same servers:\n")
                    print(
                        "| server | idle p50 | idle p90 | loaded p50 | loaded p90 | loaded max "
                        "| samples |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
                    )
                for name, (idle, busy) in table.items():
                    print(
                        f"| {name} | {percentile(idle, 0.5):.1f} | {percentile(idle, 0.9):.1f} | "
                        f"{percentile(busy, 0.5):.1f} | {percentile(busy, 0.9):.1f} | "
                        f"{max(busy):.1f} | {len(busy)} |"
                    )
        c = node(url, "bench-mem")
        try:
            node_bytes, redis_bytes = asyncio.run(memory(c.url, url, c.pid, args.peers))
        finally:
            c.stop()
        print(f"\n## 3. memory per registered answer peer ({args.peers} peers)\n")
        print("| node RSS | Redis used_memory | total |\n| ---: | ---: | ---: |")
        print(f"| {node_bytes:,.0f} B | {redis_bytes:,.0f} B | {node_bytes + redis_bytes:,.0f} B |")
        print(f"(node RSS now {rss_kib(os.getpid())} KiB in the load generator, for reference)")


if __name__ == "__main__":
    main()
