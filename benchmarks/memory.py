"""Memory per idle registered connection: rtc-signal vs the PeerJS server vs a naive relay.

Usage: ``python benchmarks/memory.py [--runs 5] [--peers 1000 5000]``

For every run and every N, each server is started afresh (on loopback); a
load-generator process (see ``--worker``) first connects, registers and closes
a few warm-up peers (so that lazily built code paths and caches are not
counted), reads the server's RSS (``VmRSS`` of /proc/PID/status), then
connects N answer peers that register (command 1 answered by 101; for PeerJS:
the connection is answered by OPEN), waits for the RSS to settle, reads it
again and reports ``(RSS after - RSS before) / N``. The connections are idle
(no keepalive ping falls inside the measurement). Runs are interleaved across
servers and the ratio column is the median of per-run ratios against PeerJS.
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
    add_server_arguments,
    chosen_starters,
    client_frame,
    connect,
    machine,
    raise_fd_limit,
    rtc_request,
    rtc_response,
    run_worker,
    set_deadline,
    settle_rss,
    table,
)

TARGET_KIB = 16.0

# -- the load generator (runs in its own process) --------------------------------


async def register(kind: str, port: int, peer_id: str) -> LeanWs:
    if kind == "peerjs":
        resource = f"/peerjs?key=peerjs&id={peer_id}&token=t"
        ws = await connect(lambda: LeanWs(HOST, port, resource), HOST, port)
        hello = json.loads(await ws.next_frame())
        assert hello == {"type": "OPEN"}, hello
    else:
        ws = await connect(lambda: LeanWs(HOST, port, "/register"), HOST, port)
        reply = await ws.request(client_frame(rtc_request(1, peer_id, "", None)))
        assert reply == rtc_response(101, 0, "ok"), reply
    ws.stop_capturing()
    return ws


async def worker(cfg: dict[str, Any]) -> dict[str, Any]:
    kind, port, n, pid = cfg["kind"], cfg["port"], cfg["peers"], cfg["server_pid"]
    sem = asyncio.Semaphore(100)  # below the servers' listen backlog

    async def one(peer_id: str) -> LeanWs:
        async with sem:
            return await register(kind, port, peer_id)

    warm = await asyncio.gather(*(one(f"warm-{i}") for i in range(cfg["warm"])))
    for ws in warm:
        ws.close()
    await asyncio.sleep(0.3)
    before = await settle_rss(pid, 2.0)
    t0 = time.perf_counter()
    peers = await asyncio.wait_for(asyncio.gather(*(one(f"idle-{i}") for i in range(n))), 90)
    connect_s = time.perf_counter() - t0
    await asyncio.sleep(0.5)
    after = await settle_rss(pid, 3.0)
    lost = sum(ws.lost.done() for ws in peers)
    if lost:
        raise RuntimeError(f"{lost} of {n} connections were closed by the server")
    for ws in peers:
        ws.close()
    await asyncio.sleep(0.1)
    return {"before_kib": before, "after_kib": after, "connect_s": connect_s}


# -- the orchestrator ---------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--peers", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--warm", type=int, default=20, help="warm-up connections")
    add_server_arguments(parser)
    args = parser.parse_args()

    if args.worker:
        raise_fd_limit()
        set_deadline(150)
        print(json.dumps(asyncio.run(worker(json.loads(args.worker)))))
        return

    starters = chosen_starters(args)
    names = list(starters)
    limit = raise_fd_limit()
    if limit < max(args.peers) + 100:
        sys.exit(f"the fd limit ({limit}) is too low for {max(args.peers)} connections")
    set_deadline(60 + args.runs * len(names) * sum(5 + n / 500 for n in args.peers) + 300)
    per_conn: dict[tuple[str, int], Sample] = {}
    delta_mib: dict[tuple[str, int], Sample] = {}
    base_mib: dict[str, Sample] = {}
    ratios: dict[tuple[str, int], Sample] = {}
    connect_rate: dict[tuple[str, int], Sample] = {}
    versions: dict[str, str] = {}
    started = time.monotonic()
    for run in range(args.runs):
        for n in args.peers:
            this_run: dict[str, float] = {}
            shift = run % len(names)
            for name in names[shift:] + names[:shift]:
                server = starters[name]()
                try:
                    versions.update({name: server.info.get("version", "")})
                    cfg = {
                        "kind": name,
                        "port": server.port,
                        "server_pid": server.pid,
                        "peers": n,
                        "warm": args.warm,
                    }
                    try:
                        res = run_worker(__file__, cfg, timeout=150)
                    except Exception:
                        print(server.stderr_tail(), file=sys.stderr)
                        raise
                finally:
                    server.stop()
                kib = (res["after_kib"] - res["before_kib"]) / n
                key = (name, n)
                per_conn.setdefault(key, Sample()).add(kib)
                delta_mib.setdefault(key, Sample()).add(
                    (res["after_kib"] - res["before_kib"]) / 1024
                )
                base_mib.setdefault(name, Sample()).add(res["before_kib"] / 1024)
                connect_rate.setdefault(key, Sample()).add(n / res["connect_s"])
                this_run[name] = kib
                print(
                    f"run {run + 1}/{args.runs} {name:>10} N={n:<5} RSS "
                    f"{res['before_kib'] / 1024:6.1f} -> {res['after_kib'] / 1024:6.1f} MiB"
                    f"  {kib:6.2f} KiB/conn  ({n / res['connect_s']:,.0f} registrations/s)",
                    file=sys.stderr,
                )
            if "peerjs" in this_run:
                for name, kib in this_run.items():
                    ratios.setdefault((name, n), Sample()).add(kib / this_run["peerjs"])

    elapsed = time.monotonic() - started
    print("\nMemory per idle registered connection (server RSS delta / N)")
    print(f"machine: {machine()}")
    if versions.get("peerjs"):
        print(f"PeerJS server: npm 'peer' {versions['peerjs']}")
    print(
        f"{args.runs} interleaved runs, a fresh server per run, {args.warm} warm-up connections "
        f"before the baseline; target <= {TARGET_KIB:g} KiB/conn; total {elapsed:.0f} s\n"
    )
    rows = []
    for n in args.peers:
        for name in names:
            key = (name, n)
            ratio = ratios.get(key)
            kib = per_conn[key]
            verdict = (
                "-" if name != "rtc-signal" else ("ok" if kib.median <= TARGET_KIB else "MISSED")
            )
            rows.append(
                [
                    name,
                    f"{n:,}",
                    kib.spread("{:.2f}"),
                    delta_mib[key].spread("{:.1f}"),
                    f"{base_mib[name].median:.1f}",
                    ratio.spread("{:.2f}x") if ratio else "-",
                    verdict,
                ]
            )
    print(
        table(
            [
                "server",
                "N",
                "KiB/conn median (min-max)",
                "RSS delta MiB",
                "idle RSS MiB",
                "vs PeerJS",
                f"<= {TARGET_KIB:g} KiB",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
