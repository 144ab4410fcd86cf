"""What full jitter buys when a signaling server with many answer peers restarts.

N library ``AnswerPeer`` s (one process, in-process ``SignalingServer`` on
127.0.0.1, no WebRTC calls) are registered; the server is closed, stays down
for ``--down`` seconds, and a new one starts on the same port. Measured from
the restart: when the peers are registered again (median, last) and the
busiest 50 ms of registrations the new server has to absorb. Baseline in the
same run: the same exponential backoff without jitter (every peer waits
exactly the cap), which brings them back in lock-step.

    python benchmarks/reconnect.py [--peers 300] [--down 2] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import machine, raise_fd_limit, set_deadline, table

from rtc_signal.peers import AnswerPeer, PeerConfig
from rtc_signal.peers.reconnect import ReconnectPolicy
from rtc_signal.signaling.server import ServerConfig, SignalingServer

WINDOW = 0.05


async def _never(_call: object) -> None:  # no call ever comes
    await asyncio.Event().wait()


async def one_run(peers: int, down: float, policy: ReconnectPolicy) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    server = SignalingServer(ServerConfig(port=0, ping_interval=None))
    await server.start()
    port = server.port
    config = PeerConfig(signal_url=server.url, connect_timeout=10)
    stamps: list[float] = []
    restarted = [0.0]
    all_back = asyncio.Event()

    def registered(_url: str) -> None:
        if restarted[0]:
            stamps.append(loop.time() - restarted[0])
            if len(stamps) == peers:
                all_back.set()

    answer_peers = [AnswerPeer(config, f"p{i}", registered, policy) for i in range(peers)]
    tasks = [asyncio.create_task(p.serve(_never)) for p in answer_peers]
    try:
        await asyncio.wait_for(asyncio.gather(*(p.wait_registered(30) for p in answer_peers)), 60)
        await server.close()
        await asyncio.sleep(down)
        server = SignalingServer(ServerConfig(port=port, ping_interval=None))
        await server.start()
        restarted[0] = loop.time()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_back.wait(), 120)
        stamps.sort()
        peak = max(sum(1 for t in stamps if start <= t < start + WINDOW) for start in stamps)
        return {
            "median": statistics.median(stamps),
            "last": stamps[-1],
            "peak": float(peak),
            "back": float(len(stamps)),
        }
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--peers", type=int, default=300)
    parser.add_argument("--down", type=float, default=2.0, help="seconds the server is down")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--base", type=float, default=0.5, help="--reconnect-delay")
    parser.add_argument("--max", type=float, default=4.0, help="--reconnect-max-delay")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    raise_fd_limit()
    set_deadline(600)
    variants = {
        "full jitter (rtc-peer)": ReconnectPolicy(args.base, args.max),
        "no jitter (baseline)": ReconnectPolicy(args.base, args.max, jitter=False),
    }
    results: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    for _ in range(args.runs):
        for name, policy in variants.items():
            results[name].append(asyncio.run(one_run(args.peers, args.down, policy)))
    rows = []
    for name, runs in results.items():
        med = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        rows.append(
            [
                name,
                f"{med['back']:.0f}/{args.peers}",
                f"{med['median']:.2f} s",
                f"{med['last']:.2f} s",
                f"{med['peak']:.0f}",
            ]
        )
    print(
        f"{args.peers} answer peers, server down {args.down:g} s, backoff "
        f"{args.base:g} s doubling to {args.max:g} s; medians of {args.runs} runs; {machine()}"
    )
    print(
        table(
            [
                "backoff",
                "back",
                "median back after",
                "last",
                f"peak per {WINDOW * 1000:.0f} ms",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
