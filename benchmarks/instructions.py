"""Instructions `rtc-signal serve` executes per relayed Offer: a before/after
of the relay's hot path that the machine's load does not move.

Usage: ``python benchmarks/instructions.py [--baseline REF] [--runs 2]``

Throughput (``relay.py``) needs a quiet machine: on a shared one, where other
processes take most of the CPU, its run-to-run spread is larger than a few
per cent of hot-path cost. Here the server runs under valgrind (cachegrind
without cache simulation, which counts the instructions executed) and relays
``--small`` then ``--large`` Offers per pair (the Go demo's real frame, each
acknowledged with a 103) for ``--pairs`` pairs with ``--window`` frames in
flight; the difference between the two counts divided by the extra Offers
is the cost of one relayed Offer, start-up and shutdown cancelled out. The
baseline is the git revision ``--baseline``'s proto/, signaling/ and peers/
(``git archive``) run with this environment's Python and dependencies; the
current one is the installed rtc_signal. Runs alternate. Needs ``valgrind``
(Debian package); under it the server is ~50x slower (~1 min per count).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from websockets.asyncio.client import connect

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (
    RTC_SIGNAL_BENCH_ARGS,
    Sample,
    _start,
    golden_offer_body,
    machine,
    rtc_request,
    set_deadline,
    table,
)

REPO = Path(__file__).resolve().parent.parent
FOLDERS = ("proto", "signaling", "peers")
_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def baseline_tree(ref: str, into: Path) -> Path:
    """``ref``'s packages laid out as rtc_signal.* under ``into``; the PYTHONPATH entry."""
    src, pkg = into / "src", into / "pkg" / "rtc_signal"
    src.mkdir(parents=True)
    pkg.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", ref, *FOLDERS],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True, timeout=60)
    for folder in FOLDERS:
        (pkg / folder).symlink_to(src / folder)
    return into / "pkg"


async def relay(url: str, pairs: int, per_pair: int, window: int) -> None:
    """Each pair: an answer peer registers, its offer peer sends ``per_pair``
    Offers, at most ``window`` unacknowledged; all delivered and acked."""
    body = golden_offer_body()

    async def pair(i: int) -> None:
        async with (
            connect(url + "/register", compression=None, ping_interval=None, max_queue=None) as a,
            connect(url + "/offer", compression=None, ping_interval=None, max_queue=None) as o,
        ):
            await a.send(rtc_request(1, f"a{i}", "", None))
            await a.recv()
            frame = rtc_request(3, f"o{i}", f"a{i}", body)
            sent = acked = 0
            while sent < min(window, per_pair):
                await o.send(frame)
                sent += 1
            while acked < per_pair:
                await o.recv()
                acked += 1
                if sent < per_pair:
                    await o.send(frame)
                    sent += 1
            for _ in range(per_pair):
                await a.recv()

    async with asyncio.timeout(900):
        await asyncio.gather(*(pair(i) for i in range(pairs)))


def count(pythonpath: Path | None, pairs: int, per_pair: int, window: int) -> int:
    """Instructions a whole server run executes while relaying ``per_pair`` Offers per pair."""
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    argv = [
        "valgrind",
        "--tool=cachegrind",
        "--cache-sim=no",
        "--cachegrind-out-file=/dev/null",
        sys.executable,
        "-m",
        "rtc_signal.signaling.cli",
        "serve",
        "--port",
        "0",
        "--log-level",
        "warning",
        "--ping-interval",
        "0",
        *RTC_SIGNAL_BENCH_ARGS,
    ]
    server = _start("valgrind", argv, timeout=120, env=env)
    try:
        asyncio.run(relay(server.url, pairs, per_pair, window))
        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(120)
        match = _REFS.search(Path(server.stderr_path).read_text(errors="replace"))
        if match is None:
            tail = server.stderr_tail()
            raise RuntimeError(f"no instruction count in valgrind's output:\n{tail}")
        return int(match.group(1).replace(",", ""))
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="HEAD", help="git revision to compare with")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--window", type=int, default=32, help="frames in flight per pair")
    parser.add_argument("--small", type=int, default=100, help="Offers per pair, first count")
    parser.add_argument("--large", type=int, default=600, help="Offers per pair, second count")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is needed: sudo apt-get install -y valgrind")
    if args.large <= args.small:
        sys.exit("--large must be above --small")
    set_deadline(60 + args.runs * 2 * 2 * 600)
    extra = args.pairs * (args.large - args.small)
    per_offer: dict[str, Sample] = {"current": Sample(), args.baseline: Sample()}
    with tempfile.TemporaryDirectory(prefix="rtc-instructions-") as tmp:
        paths = {"current": None, args.baseline: baseline_tree(args.baseline, Path(tmp))}
        for run in range(args.runs):
            for name, path in paths.items():
                small = count(path, args.pairs, args.small, args.window)
                large = count(path, args.pairs, args.large, args.window)
                per_offer[name].add((large - small) / extra)
                print(
                    f"run {run + 1}/{args.runs} {name:>10}: "
                    f"{per_offer[name].values[-1]:,.0f} instructions per Offer",
                    file=sys.stderr,
                )
    base = per_offer[args.baseline].median
    print("\nInstructions the server executes per relayed Offer (and its 103), under valgrind")
    print(f"machine: {machine()}")
    print(
        f"{args.runs} alternating runs; {args.pairs} pairs, window {args.window}, "
        f"{args.large} - {args.small} Offers per pair\n"
    )
    rows = [
        [name, sample.spread(), f"{100 * (sample.median / base - 1):+.1f}%"]
        for name, sample in per_offer.items()
    ]
    print(table(["server", "instructions per Offer median (min-max)", "vs baseline"], rows))


if __name__ == "__main__":
    main()
