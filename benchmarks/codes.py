"""Code-to-first-byte: a one-time code call against a named call, same run.

Usage: ``python benchmarks/codes.py [--runs 7] [--timeout 60]``

Each run starts an answer peer (``rtc-peer answer --code`` or ``--id NAME``,
``--count 1 --interval 0``) and waits until it says it is ready (prints its
code / says it registered); the clock starts there, as a person reading the
code out would start it. Then ``rtc-peer offer --code CODE`` (or
``--target NAME``) starts, and the clock stops at its first stdout line
``recv ...``: the first message from the other side over the data channel.
So both figures include the offer process's start-up (imports); code mode
adds the SPAKE2 round trip over the signaling server and the MACs.

A second table gives what code mode costs in CPU, in this process, without
the network: both sides' SPAKE2 (start and finish, HKDF), median of 21.

Runs alternate (code, named, code, ...) on one ``rtc-signal serve --port 0``;
the table gives the median (min, max) of each. Loopback only (host
candidates on 127.0.0.1, no STUN/TURN); every wait is bounded by
``--timeout`` and every child is stopped at exit.
"""

from __future__ import annotations

import argparse
import queue
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PEER = [sys.executable, "-m", "rtc_signal.peers.cli"]
SERVER = [sys.executable, "-m", "rtc_signal.signaling.cli"]
LOOPBACK = ["--host-address", "127.0.0.1"]
ONE = ["--count", "1", "--interval", "0"]


class Lines:
    """A child's stdout or stderr, line by line, with a bounded wait."""

    def __init__(self, stream: object) -> None:
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: object) -> None:
        for line in iter(stream.readline, ""):  # type: ignore[attr-defined]
            self._queue.put(line)
        self._queue.put(None)

    def until(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise SystemExit(f"timed out waiting for {pattern!r}") from None
            if line is None:
                raise SystemExit(f"the process ended before {pattern!r}")
            match = re.search(pattern, line)
            if match:
                return match


@contextmanager
def child(argv: list[str]) -> Iterator[tuple[subprocess.Popen[str], Lines, Lines]]:
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        yield proc, Lines(proc.stdout), Lines(proc.stderr)
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def one_run(url: str, mode: str, run: int, timeout: float) -> float:
    common = ["--signal", url, *LOOPBACK, *ONE]
    if mode == "code":
        answer = [*PEER, "answer", "--code", *common]
        ready = r"^rtc-peer: code (\S+)"
    else:
        answer = [*PEER, "answer", "--id", f"bench-{run}", *common]
        ready = r"^rtc-peer: registered as"
    with child(answer) as (answer_proc, _, answer_err):
        match = answer_err.until(ready, timeout)
        started = time.monotonic()
        how = ["--code", match.group(1)] if mode == "code" else ["--target", f"bench-{run}"]
        with child([*PEER, "offer", *how, *common]) as (offer_proc, offer_out, _):
            offer_out.until(r"^recv ", timeout)
            elapsed = time.monotonic() - started
            offer_proc.wait(timeout)
        answer_proc.wait(timeout)
    return elapsed


def pake_cpu_seconds(runs: int = 21) -> list[float]:
    """CPU time of one whole exchange (both sides), without any I/O."""
    from rtc_signal.peers.codes import new_code
    from rtc_signal.peers.pake import CodeAuth

    times = []
    for _ in range(runs):
        code = new_code()
        started = time.process_time()
        offer = CodeAuth(code, "offer", "offer-x", code.peer_id)
        answer = CodeAuth(code, "answer", "offer-x", code.peer_id)
        answer.receive(offer.message())
        offer.receive(answer.message())
        times.append(time.process_time() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    with child([*SERVER, "serve", "--host", "127.0.0.1", "--port", "0"]) as (_, out, _err):
        url = out.until(r"listening on (ws://\S+)", args.timeout).group(1)
        samples: dict[str, list[float]] = {"code": [], "named": []}
        for run in range(args.runs):
            for mode in ("code", "named") if run % 2 == 0 else ("named", "code"):
                samples[mode].append(one_run(url, mode, run, args.timeout))
    print(f"code-to-first-byte, {args.runs} runs each, interleaved (seconds)")
    print(f"{'call':<28} {'median':>8} {'min':>8} {'max':>8}")
    labels = {"code": "offer --code (SPAKE2+MAC)", "named": "offer --target (baseline)"}
    for mode, values in samples.items():
        print(
            f"{labels[mode]:<28} {statistics.median(values):8.3f} "
            f"{min(values):8.3f} {max(values):8.3f}"
        )
    ratio = statistics.median(samples["code"]) / statistics.median(samples["named"])
    print(f"code / named (medians): {ratio:.2f}x")
    cpu = [seconds * 1000 for seconds in pake_cpu_seconds()]
    print(
        f"SPAKE2 exchange, both sides, CPU in-process: median {statistics.median(cpu):.1f} ms "
        f"(min {min(cpu):.1f}, max {max(cpu):.1f})"
    )


if __name__ == "__main__":
    main()
