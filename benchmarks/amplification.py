"""Amplification: an honest caller's calls while three flooders hammer its answer peer.

Usage: ``python benchmarks/amplification.py [--runs 5] [--calls 10] [--seconds 4]``

``rtc-signal serve`` with its default limits (100 messages/s per connection,
burst 200) and one ``rtc-peer answer --id victim --interval 0`` (it
acknowledges every request forwarded to it, as the Go demo's peers do). Each
run has two phases, interleaved: with no flood, then with three flooders, each
a raw ``/offer`` connection sending Candidates to ``victim`` at 90/s (under its
own limit; together 2.7x the victim's). In each phase an honest caller in this
process makes ``--calls`` calls (``rtc_signal.peers.call``, channel open, one
echo) one after the other. Reported: calls that opened, median set-up time
(call to channel open), and whether the answer peer survived (before credits,
its acks pushed it over its own limit: 429s, then close 1008).

Loopback only (host candidates on 127.0.0.1, no STUN/TURN); every wait is
bounded, the whole run has ``--time-limit``, children are stopped at exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from pathlib import Path

from _common import Helper, console_script, guard_children, machine, start_server, table
from websockets.asyncio.client import connect

from rtc_signal.peers import IceSettings, PeerConfig, call
from rtc_signal.proto import Command, decode, encode_request

CANDIDATE = b"candidate:1 1 udp 2130706431 127.0.0.1 9 typ host"
FLOODERS = 3
FLOOD_RATE = 90.0


async def flooder(url: str, name: str, stop: asyncio.Event, codes: dict[int, int]) -> None:
    async with connect(url + "/offer", open_timeout=10, close_timeout=2) as ws:

        async def count() -> None:
            async for frame in ws:
                code = decode(frame).response.code
                codes[code] = codes.get(code, 0) + 1

        reader = asyncio.create_task(count())
        try:
            frame = encode_request(Command.CANDIDATE, name, "victim", CANDIDATE)
            while not stop.is_set():
                await ws.send(frame)
                await asyncio.sleep(1 / FLOOD_RATE)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


async def calls(config: PeerConfig, n: int) -> tuple[int, list[float]]:
    """``n`` calls, one after the other: how many opened, and their set-up times (ms)."""
    opened, setups = 0, []
    for i in range(n):
        started = time.perf_counter()
        try:
            async with call(config, "victim", f"honest-{i}-{time.monotonic_ns()}") as c:
                setups.append((time.perf_counter() - started) * 1e3)
                await c.channel.send("ping")
                await asyncio.wait_for(c.channel.receive(), 5)
                opened += 1
        except Exception as exc:  # counted as a failed call, and said
            print(f"call failed: {exc!r}", file=sys.stderr)
    return opened, setups


async def phase(url: str, flooded: bool, n: int, codes: dict[int, int]) -> tuple[int, list[float]]:
    config = PeerConfig(
        signal_url=url, ice=IceSettings(host_addresses=("127.0.0.1",)), connect_timeout=10
    )
    if not flooded:
        return await calls(config, n)
    stop = asyncio.Event()
    floods = [asyncio.create_task(flooder(url, f"flooder-{k}", stop, codes)) for k in range(3)]
    try:
        await asyncio.sleep(1.0)  # the flood is on before the first call
        return await calls(config, n)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*floods, return_exceptions=True), 10)


async def bench(args: argparse.Namespace) -> None:
    other = args.bin
    server, url = start_server([str(other / "rtc-signal")] if other else None)
    peer = [str(other / "rtc-peer")] if other else console_script("rtc-peer")
    answer = Helper.start(
        "victim",
        [*peer, "answer", "--id", "victim", "--signal", url,
         "--host-address", "127.0.0.1", "--interval", "0"],
    )  # fmt: skip
    answer.wait_line("rtc-peer: registered as", 20)
    results: dict[bool, tuple[int, int, list[float]]] = {False: (0, 0, []), True: (0, 0, [])}
    codes: dict[int, int] = {}
    for _ in range(args.runs):
        for flooded in (False, True):
            opened, setups = await phase(url, flooded, args.calls, codes)
            done, tried, all_setups = results[flooded]
            results[flooded] = (done + opened, tried + args.calls, all_setups + setups)
    alive = answer.proc.poll() is None
    victim_log = answer.text()
    base = statistics.median(results[False][2]) if results[False][2] else float("nan")
    rows = []
    for flooded in (False, True):
        done, tried, setups = results[flooded]
        median = statistics.median(setups) if setups else float("nan")
        rows.append(
            [
                f"{FLOODERS} flooders at {FLOOD_RATE:g}/s" if flooded else "no flood (baseline)",
                f"{done}/{tried} ({100 * done / tried:.0f} %)",
                f"{median:.1f}",
                f"{median / base:.2f}x",
            ]
        )
    print(f"# Amplification ({args.runs} runs x {args.calls} calls per phase, loopback)\n")
    if other:
        print(f"Server and answer peer: {other}/rtc-signal, {other}/rtc-peer\n")
    print(f"Machine: {machine('aiortc', 'websockets')}\n")
    print(table(["phase", "calls opened", "median set-up ms", "vs no flood"], rows))
    refused = codes.get(429, 0)
    print(
        f"\nFlooders' replies: {sum(codes.values())} ({codes.get(0, 0)} ok, {refused} x 429); "
        f"the answer peer survived: {'yes' if alive else 'NO'}; 429s or 1008 in its log: "
        f"{'yes' if '429' in victim_log or '1008' in victim_log else 'no'}."
    )
    server.check_alive()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--time-limit", type=float, default=600)
    parser.add_argument(
        "--bin",
        type=Path,
        metavar="BIN_DIR",
        help="run the server and answer peer of another installation (a venv's bin/), "
        "e.g. the previous release, to compare",
    )
    args = parser.parse_args()
    guard_children(args.time_limit)
    asyncio.run(bench(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
