"""Load: thousands of concurrent registered peers on one ``rtc-signal serve``.

Usage: ``python benchmarks/load.py [--runs 3] [--peers 5000] [--baseline 100]
[--hold 20] [--ping-interval 5] [--callers 50] [--rate 10]``

Per run, a fresh ``rtc-signal serve`` (loopback) with its command-line
defaults (rate limit, idle timeout, connection limit: what a deployment
gets) except a short ``--ping-interval``/``--ping-timeout`` so that several
keepalive rounds fall inside the run; the server raises its own open-file
limit, and so does this script for the load generator.

The load generator (its own process, lean raw WebSocket clients from
``_common``, one asyncio event loop):

1. registers a few warm-up peers and closes them, reads the server's RSS;
2. connects and registers ``--peers`` answer peers (at most 100 handshakes at
   a time), each answering the server's keepalive pings;
3. reads the server's RSS once it settles: (RSS - baseline) / peers;
4. for ``--hold`` seconds keeps them all connected while ``--callers`` offer
   peers each send the Go demo's Offer to one registered peer after another
   (one in flight per caller, ``--rate`` per second each), measuring the
   relay latency (offer peer's write to the answer peer's read, one clock)
   and the server's CPU; pings keep going meanwhile;
5. checks that no connection was lost (every peer answered every ping).

Each run does this twice, with ``--baseline`` peers and with ``--peers``
(alternating which goes first): the ratio column compares them, run by run,
so that what the shared machine does to latency cancels out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (
    HOST,
    LeanWs,
    Sample,
    _start,
    client_frame,
    connect,
    cpu_seconds,
    golden_offer_body,
    machine,
    raise_fd_limit,
    rss_kib,
    rtc_request,
    rtc_response,
    rtc_signal_argv,
    run_worker,
    set_deadline,
    settle_rss,
    table,
)

ACK = rtc_response(103, 0, "ok")


class Peer(LeanWs):
    """A registered answer peer: answers pings (LeanWs), times deliveries."""

    caller: Caller | None = None

    def on_frame(self, buf: bytearray, start: int, end: int) -> None:
        caller, self.caller = self.caller, None
        if caller is not None:
            caller.delivered(time.perf_counter())


class Caller(LeanWs):
    """An offer peer with one offer in flight."""

    def __init__(self, host: str, port: int, resource: str) -> None:
        super().__init__(host, port, resource)
        self.sent_at: float | None = None
        self.latencies: list[float] = []
        self.errors = 0
        self.late = 0

    def on_frame(self, buf: bytearray, start: int, end: int) -> None:
        if bytes(buf[start:end]) != ACK:
            self.errors += 1

    def call(self, peer: Peer, frame: bytes) -> None:
        if self.sent_at is not None:
            if time.perf_counter() - self.sent_at < 2.0:
                return
            self.late += 1
        peer.caller = self
        self.sent_at = time.perf_counter()
        self.write(frame)

    def delivered(self, at: float) -> None:
        if self.sent_at is not None:
            self.latencies.append(at - self.sent_at)
            self.sent_at = None


async def register(port: int, peer_id: str) -> Peer:
    ws = await connect(lambda: Peer(HOST, port, "/register"), HOST, port, timeout=30)
    reply = await ws.request(client_frame(rtc_request(1, peer_id, "", None)), timeout=30)
    assert reply == rtc_response(101, 0, "ok"), reply
    ws.stop_capturing()
    return ws


async def worker(cfg: dict[str, Any]) -> dict[str, Any]:
    port, n, pid = cfg["port"], cfg["peers"], cfg["server_pid"]
    sem = asyncio.Semaphore(100)  # below the listen backlog

    async def one(peer_id: str) -> Peer:
        async with sem:
            return await register(port, peer_id)

    warm = await asyncio.gather(*(one(f"warm-{i}") for i in range(20)))
    for ws in warm:
        ws.close()
    await asyncio.sleep(0.5)
    before = await settle_rss(pid, 3.0, step=0.5, still_kib=128)
    t0 = time.perf_counter()
    peers = await asyncio.wait_for(asyncio.gather(*(one(f"peer-{i}") for i in range(n))), 180)
    connect_s = time.perf_counter() - t0
    after = await settle_rss(pid, 5.0, step=0.5, still_kib=128)

    body = golden_offer_body()
    callers: list[Caller] = []
    for _ in range(cfg["callers"]):
        caller = await connect(lambda: Caller(HOST, port, "/offer"), HOST, port)
        caller.stop_capturing()
        callers.append(caller)
    k = len(callers)
    frames = [
        [client_frame(rtc_request(3, f"caller-{c}", f"peer-{j}", body)) for j in range(c, n, k)]
        for c in range(k)
    ]
    targets = [peers[c::k] for c in range(k)]

    async def calls(c: int, until: float) -> int:
        await asyncio.sleep(c / (cfg["rate"] * k))
        made = 0
        while time.perf_counter() < until:
            j = made % len(targets[c])
            callers[c].call(targets[c][j], frames[c][j])
            made += 1
            await asyncio.sleep(1 / cfg["rate"])
        return made

    pings0 = sum(p.pings for p in peers)
    s0, h0 = cpu_seconds(pid), time.perf_counter()
    until = h0 + cfg["hold"]
    made = sum(await asyncio.gather(*(calls(c, until) for c in range(k))))
    held = time.perf_counter() - h0
    s1 = cpu_seconds(pid)
    await asyncio.sleep(0.3)
    rss_hold = rss_kib(pid)
    lost = sum(ws.lost.done() for ws in peers)
    latencies = sorted(x for c in callers for x in c.latencies)
    result = {
        "before_kib": before,
        "after_kib": after,
        "hold_kib": rss_hold,
        "connect_s": connect_s,
        "lost": lost,
        "calls": made,
        "late": sum(c.late + (c.sent_at is not None) for c in callers),
        "errors": sum(c.errors for c in callers),
        "latencies": latencies,
        "server_cpu": (s1 - s0) / held,
        "pings": (sum(p.pings for p in peers) - pings0) / n,
    }
    conns: list[LeanWs] = [*peers, *callers]
    for conn in conns:
        conn.close()
    await asyncio.sleep(0.2)
    return result


def percentile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--peers", type=int, default=5000)
    parser.add_argument("--baseline", type=int, default=100, help="peers of the baseline")
    parser.add_argument("--hold", type=float, default=20.0, help="seconds measured")
    parser.add_argument("--ping-interval", type=float, default=5.0)
    parser.add_argument("--callers", type=int, default=50)
    parser.add_argument("--rate", type=float, default=10.0, help="offers/s per caller")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        cfg = json.loads(args.worker)
        raise_fd_limit()
        set_deadline(cfg["hold"] + 300)
        print(json.dumps(asyncio.run(worker(cfg))))
        return

    limit = raise_fd_limit()
    if limit < args.peers + args.callers + 100:
        sys.exit(f"the fd limit ({limit}) is too low for {args.peers} connections")
    sizes = [args.baseline, args.peers]
    set_deadline(60 + args.runs * sum(args.hold + n / 200 + 60 for n in sizes))
    keys = ("kib", "connect", "p50", "p99", "max", "cpu", "pings", "rss_hold")
    samples = {n: {key: Sample() for key in keys} for n in sizes}
    ratios = {key: Sample() for key in ("p50", "p99", "cpu")}
    started = time.monotonic()
    lost_total = late_total = errors_total = 0
    interval = f"{args.ping_interval:g}"
    for run in range(args.runs):
        this_run: dict[int, dict[str, float]] = {}
        for n in sizes if run % 2 == 0 else sizes[::-1]:
            server = _start(
                "rtc-signal",
                rtc_signal_argv("--ping-interval", interval, "--ping-timeout", interval),
            )
            try:
                cfg = {
                    "port": server.port,
                    "server_pid": server.pid,
                    "peers": n,
                    "hold": args.hold,
                    "callers": args.callers,
                    "rate": args.rate,
                }
                try:
                    res = run_worker(__file__, cfg, timeout=args.hold + 300)
                except Exception:
                    print(server.stderr_tail(), file=sys.stderr)
                    raise
            finally:
                server.stop()
            lat = res["latencies"]
            values = {
                "kib": (res["after_kib"] - res["before_kib"]) / n,
                "connect": n / res["connect_s"],
                "p50": percentile(lat, 0.5) * 1e3,
                "p99": percentile(lat, 0.99) * 1e3,
                "max": (lat[-1] if lat else float("nan")) * 1e3,
                "cpu": res["server_cpu"] * 100,
                "pings": res["pings"],
                "rss_hold": res["hold_kib"] / 1024,
            }
            for key, value in values.items():
                samples[n][key].add(value)
            this_run[n] = values
            lost_total += res["lost"]
            late_total += res["late"]
            errors_total += res["errors"]
            print(
                f"run {run + 1}/{args.runs} N={n}: RSS {res['before_kib'] / 1024:.1f} -> "
                f"{res['after_kib'] / 1024:.1f} MiB ({values['kib']:.2f} KiB/peer), "
                f"{values['connect']:,.0f} registrations/s, {res['calls']:,} calls: "
                f"p50 {values['p50']:.2f} ms p99 {values['p99']:.2f} ms, server CPU "
                f"{values['cpu']:.0f}%, {res['pings']:.1f} pings/peer, lost {res['lost']}, "
                f"late {res['late']}, errors {res['errors']}",
                file=sys.stderr,
            )
        for key, sample in ratios.items():
            sample.add(this_run[args.peers][key] / this_run[args.baseline][key])

    print(f"\n{args.peers:,} concurrent registered peers on one rtc-signal serve process")
    print(f"machine: {machine()}")
    print(
        f"{args.runs} runs, each with a fresh server for {args.baseline:,} (baseline) and "
        f"{args.peers:,} peers; keepalive every {args.ping_interval:g} s; {args.callers} "
        f"callers x {args.rate:g} offers/s (974-byte Go Offer frames) during {args.hold:g} s "
        f"with every peer connected; total {time.monotonic() - started:.0f} s\n"
    )
    base, full = samples[args.baseline], samples[args.peers]

    def row(label: str, key: str, fmt: str, unit: str = "") -> list[str]:
        ratio = ratios.get(key)
        return [
            label,
            base[key].spread(fmt) + unit,
            full[key].spread(fmt) + unit,
            ratio.spread("{:.2f}x") if ratio else "-",
        ]

    rows = [
        row("server RSS per registered peer", "kib", "{:.2f}", " KiB"),
        row("server RSS with all peers connected", "rss_hold", "{:.0f}", " MiB"),
        row("registrations per second", "connect", "{:,.0f}"),
        row("relay latency p50", "p50", "{:.2f}", " ms"),
        row("relay latency p99", "p99", "{:.2f}", " ms"),
        row("relay latency max", "max", "{:.1f}", " ms"),
        row("server CPU while holding (calls + pings)", "cpu", "{:.0f}", " %"),
        row("keepalive pings answered per peer", "pings", "{:.1f}"),
    ]
    headers = ["measure", f"{args.baseline:,} peers", f"{args.peers:,} peers", "ratio"]
    print(table(headers, rows))
    print(
        f"\nconnections lost: {lost_total}; offers not delivered within 2 s: {late_total}; "
        f"refused offers: {errors_total}"
    )
    if lost_total or errors_total:
        sys.exit("some connections were lost or some offers refused")


if __name__ == "__main__":
    main()
