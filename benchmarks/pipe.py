"""`rtc-peer offer --pipe < file` -> `rtc-peer answer --pipe > out` between two processes.

Usage: ``python benchmarks/pipe.py [--runs 3] [--mb 50] [--receiver-stdin devnull|pipe]``

Starts ``rtc-signal serve --port 0`` on loopback, then, ``--runs`` times, an
answer peer with ``--pipe > out`` (its stdin /dev/null, or with
``--receiver-stdin pipe`` a pipe kept open until the transfer is complete: what
the pipes needed before they had an end-of-stream marker) and an offer peer
with ``--pipe < file`` of ``--mb`` MB of random bytes. Timed from the offer's
start to the moment the receiver has written every byte and exited (so
start-up and negotiation are included); checks the SHA-256 of ``out``.
Baseline in the same run: ``cat file > out`` through a shell pipe (the
ceiling of any copy here). Prints the median (min-max) in MB/s (10^6 bytes/s).
Every wait is bounded; every child is killed at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PEER = [sys.executable, "-m", "rtc_signal.peers.cli"]
LOOPBACK = ["--host-address", "127.0.0.1"]
LIMIT = 300.0


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def start_server() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "rtc_signal.signaling.cli", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        for word in line.split():
            if word.startswith("ws://"):
                return proc, word.rstrip(",.")
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError("rtc-signal did not start")


def one_run(url: str, source: Path, out: Path, peer_id: str, receiver_stdin: str) -> float:
    """Seconds from the offer's start to the receiver's exit with every byte."""
    common = ["--signal", url, *LOOPBACK, "--pipe"]
    err = out.with_suffix(".err")
    stdin = subprocess.DEVNULL if receiver_stdin == "devnull" else subprocess.PIPE
    with out.open("wb") as sink, err.open("wb") as log:
        answer = subprocess.Popen(
            [*PEER, "answer", "--id", peer_id, *common], stdin=stdin, stdout=sink, stderr=log
        )
    procs = [answer]
    try:
        deadline = time.monotonic() + 30
        while b"registered as" not in err.read_bytes():
            if time.monotonic() > deadline or answer.poll() is not None:
                raise RuntimeError(f"answer peer did not register: {err.read_text()}")
            time.sleep(0.02)
        size = source.stat().st_size
        started = time.monotonic()
        with source.open("rb") as data:
            offer = subprocess.Popen(
                [*PEER, "offer", "--target", peer_id, *common],
                stdin=data,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        procs.append(offer)
        if receiver_stdin == "pipe":
            while out.stat().st_size < size:
                if time.monotonic() - started > LIMIT or answer.poll() is not None:
                    break
                time.sleep(0.005)
            assert answer.stdin is not None
            answer.stdin.close()
        answer.wait(LIMIT)
        elapsed = time.monotonic() - started
        _, offer_err = offer.communicate(timeout=LIMIT)
        if answer.returncode != 0 or offer.returncode != 0:
            raise RuntimeError(
                f"exit {answer.returncode}/{offer.returncode}: {err.read_text()} {offer_err!r}"
            )
        return elapsed
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mb", type=int, default=50)
    parser.add_argument("--receiver-stdin", choices=["devnull", "pipe"], default="devnull")
    args = parser.parse_args()
    size = args.mb * 1_000_000
    server, url = start_server()
    try:
        with tempfile.TemporaryDirectory(prefix="pipe-bench-") as tmp:
            source, out = Path(tmp) / "in.bin", Path(tmp) / "out.bin"
            source.write_bytes(os.urandom(size))
            expected = sha256(source)
            rates, baseline = [], []
            for run in range(args.runs):
                started = time.monotonic()
                subprocess.run(f"cat {source} > {out}", shell=True, check=True, timeout=LIMIT)
                baseline.append(size / 1e6 / (time.monotonic() - started))
                seconds = one_run(url, source, out, f"pipe-bench-{run}", args.receiver_stdin)
                if sha256(out) != expected:
                    raise RuntimeError(f"run {run}: out.bin differs ({out.stat().st_size} bytes)")
                rates.append(size / 1e6 / seconds)
                print(f"run {run + 1}: {seconds:.2f} s, {rates[-1]:.1f} MB/s", file=sys.stderr)
    finally:
        server.kill()
        server.wait(5)

    def cell(values: list[float]) -> str:
        return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"

    print(f"| what ({args.mb} MB, {args.runs} runs) | MB/s median (min-max) |")
    print("|---|---|")
    print(f"| rtc-peer --pipe, receiver stdin {args.receiver_stdin} | {cell(rates)} |")
    print(f"| cat file > out (baseline) | {cell(baseline)} |")


if __name__ == "__main__":
    main()
