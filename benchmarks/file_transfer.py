"""`rtc-peer send` -> `rtc-peer answer --accept-files` between two processes.

Usage: ``python benchmarks/file_transfer.py [--runs 3] [--mib 64] [--time-limit 600]``

Starts ``rtc-signal serve --port 0`` and two receiving answer peers (one with
the aiortc speed-ups of ``peers/tuning.py``, one with ``RTC_PEER_NO_TUNING=1``),
then, ``--runs`` times, sends one file of ``--mib`` MiB of random bytes with a
fresh ``rtc-peer send`` process to each (the sender with the same tuning as
its receiver), timed from process start to exit (so start-up, negotiation and
the SHA-256 on both sides are included), and checks the received file's
SHA-256. Baseline in the same run: copying the file on disk
(``shutil.copyfile``), the ceiling of any transfer here. Prints medians
(min-max) in MB/s (10^6 bytes/s). Loopback only; every wait is bounded; every
child is killed at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import children as _children
from _common import machine, set_deadline, stop_children, table

PEER = [sys.executable, "-m", "rtc_signal.peers.cli"]
SERVER = [sys.executable, "-m", "rtc_signal.signaling.cli"]
LOOPBACK = ["--host-address", "127.0.0.1"]


def spawn(argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    _children.append(proc)
    return proc


def wait_line(stream: object, prefix: str, timeout: float = 20) -> str:
    """The first line of ``stream`` starting with ``prefix`` (a thread: readline blocks)."""
    found: list[str] = []

    def read() -> None:
        for line in iter(stream.readline, ""):  # type: ignore[attr-defined]
            if line.startswith(prefix):
                found.append(line)
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    if not found:
        raise SystemExit(f"file_transfer: no {prefix!r} line within {timeout} s")
    return found[0]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--time-limit", type=float, default=600)
    args = parser.parse_args()
    set_deadline(args.time_limit)
    size = args.mib << 20
    work = Path(tempfile.mkdtemp(prefix="rtc-file-bench-"))
    try:
        source = work / "payload.bin"
        with source.open("wb") as f:
            for _ in range(args.mib):
                f.write(os.urandom(1 << 20))
        want = sha256(source)
        server = spawn([*SERVER, "serve", "--port", "0", "--log-level", "warning"])
        url = wait_line(server.stdout, "listening on ").split()[-1]
        variants = {"tuned": {}, "untuned": {"RTC_PEER_NO_TUNING": "1"}}
        for name, env in variants.items():
            inbox = work / name
            inbox.mkdir()
            receiver = spawn(
                [
                    *PEER,
                    "answer",
                    "--id",
                    f"files-{name}",
                    "--signal",
                    url,
                    *LOOPBACK,
                    "--accept-files",
                    str(inbox),
                    "--overwrite",
                ],
                env,
            )
            wait_line(receiver.stderr, "rtc-peer: registered")
        rates: dict[str, list[float]] = {name: [] for name in [*variants, "disk copy"]}
        for _ in range(args.runs):
            for name, env in variants.items():
                started = time.perf_counter()
                sender = spawn(
                    [
                        *PEER,
                        "send",
                        str(source),
                        "--target",
                        f"files-{name}",
                        "--signal",
                        url,
                        *LOOPBACK,
                    ],
                    env,
                )
                _, err = sender.communicate(timeout=max(60.0, args.mib * 2.0))
                elapsed = time.perf_counter() - started
                if sender.returncode != 0:
                    raise SystemExit(f"file_transfer: send ({name}) failed: {err.strip()}")
                if sha256(work / name / source.name) != want:
                    raise SystemExit(f"file_transfer: received file ({name}) differs")
                rates[name].append(size / elapsed / 1e6)
            started = time.perf_counter()
            shutil.copyfile(source, work / "copy.bin")
            rates["disk copy"].append(size / (time.perf_counter() - started) / 1e6)
        copy = statistics.median(rates["disk copy"])
        rows = [
            [
                name,
                f"{statistics.median(v):.1f}",
                f"{min(v):.1f}-{max(v):.1f}",
                f"{statistics.median(v) / copy:.3f}x",
            ]
            for name, v in rates.items()
        ]
        print(machine())
        print(
            f"{args.mib} MiB of random bytes, {args.runs} runs; `rtc-peer send` timed from "
            "process start to exit (start-up, negotiation, SHA-256 included)"
        )
        print(table(["transfer", "MB/s median", "min-max", "vs disk copy"], rows))
        return 0
    finally:
        stop_children()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
