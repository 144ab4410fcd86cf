"""Media fan-out cost: CPU of the camera peer per viewer, passthrough vs --transcode.

Usage: ``python benchmarks/media.py [--runs 3] [--seconds 4] [--viewers 1,4,16]``

A 720p30 H.264 Baseline clip (made here with PyAV, GOP 2 s, ~2.5 Mbit/s)
is served by ``rtc-peer answer --video clip.ts`` (passthrough: packets are
forwarded, never decoded) and by ``rtc-peer answer --video clip.ts
--transcode`` (decoded once, encoded by aiortc's libx264 for each viewer:
the baseline). N viewers in one other process (``_media_viewers.py``) count
frames and RTP packets without decoding. After a 2 s warm-up, the camera
process's CPU time (/proc/PID/stat) is read over ``--seconds``, and the
viewers' frame counts over the same window give the delivered frame rate.

CPU per additional viewer = (CPU at N - CPU at 1) / (N - 1). Everything runs
on loopback (127.0.0.1 host candidates, no ICE server); each figure is the
median of ``--runs`` runs (min-max shown), modes interleaved run by run. On
2 shared cores the 16-viewer transcode case saturates the machine: its
delivered frame rate shows by how much.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from _common import (  # noqa: E402
    Sample,
    cpu_seconds,
    machine,
    set_deadline,
    start_rtc_signal,
    stop_children,
)
from _common import children as _children  # noqa: E402
from _common import table as _table  # noqa: E402

from rtc_signal.peers.media.testclip import make_clip  # noqa: E402

PEER = [sys.executable, "-m", "rtc_signal.peers.cli"]
WARMUP = 2.0


def start_camera(
    url: str, name: str, clip: Path, transcode: bool, log: Path
) -> subprocess.Popen[bytes]:
    argv = [*PEER, "answer", "--id", name, "--signal", url, "--host-address", "127.0.0.1"]
    argv += ["--video", str(clip), "--log-level", "error"]
    if transcode:
        argv.append("--transcode")
    with log.open("wb") as err:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
        )
    _children.append(proc)
    deadline = time.monotonic() + 30
    while "registered as" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"camera peer did not register:\n{log.read_text()}")
        time.sleep(0.05)
    return proc


_runs = 0


def measure(
    url: str, clip: Path, transcode: bool, viewers: int, seconds: float, tmp: Path
) -> dict[str, float]:
    """One run: camera + N viewers; the camera's CPU % and the delivered fps."""
    global _runs
    _runs += 1
    name = f"cam-{_runs}"  # a fresh ID: the server holds a dropped one for a while
    cam = start_camera(url, name, clip, transcode, tmp / "cam.log")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    watchers = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "_media_viewers.py"),
            "--signal",
            url,
            "--target",
            name,
            "--viewers",
            str(viewers),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    _children.append(watchers)
    try:
        assert watchers.stdin is not None and watchers.stdout is not None
        if watchers.stdout.readline().strip() != "ready":
            raise RuntimeError(
                f"viewers did not start (camera log: {(tmp / 'cam.log').read_text()})"
            )
        time.sleep(WARMUP)

        def mark() -> dict[str, Any]:
            assert watchers.stdin is not None and watchers.stdout is not None
            watchers.stdin.write("mark\n")
            watchers.stdin.flush()
            result: dict[str, Any] = json.loads(watchers.stdout.readline())
            return result

        before, cpu0, t0 = mark(), cpu_seconds(cam.pid), time.monotonic()
        time.sleep(seconds)
        after, cpu1, t1 = mark(), cpu_seconds(cam.pid), time.monotonic()
        elapsed = t1 - t0
        fps = [(a - b) / elapsed for a, b in zip(after["frames"], before["frames"], strict=True)]
        pps = [(a - b) / elapsed for a, b in zip(after["packets"], before["packets"], strict=True)]
        return {
            "cpu": (cpu1 - cpu0) / elapsed * 100,
            "fps": min(fps),
            "pps": sum(pps) / len(pps),
        }
    finally:
        watchers.stdin.close() if watchers.stdin else None
        for proc in (watchers, cam):
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--viewers", default="1,4,16")
    args = parser.parse_args()
    counts = [int(n) for n in args.viewers.split(",")]
    modes = {"passthrough": False, "--transcode": True}
    per_run = 12 + args.seconds + WARMUP + 0.3 * max(counts)
    set_deadline(60 + per_run * args.runs * len(counts) * len(modes))
    print(f"# media fan-out, 720p30 H.264; {machine()}")
    server = start_rtc_signal()
    results: dict[tuple[str, int], dict[str, Sample]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-media-") as d:
            tmp = Path(d)
            clip = make_clip(
                tmp / "720p.ts",
                seconds=10,
                width=1280,
                height=720,
                fps=30,
                gop=60,
                bitrate=2_500_000,
            )
            for run in range(args.runs):
                for n in counts:
                    for mode, transcode in modes.items():
                        figures = measure(server.url, clip, transcode, n, args.seconds, tmp)
                        slot = results.setdefault((mode, n), {k: Sample() for k in figures})
                        for key, value in figures.items():
                            slot[key].add(value)
                        print(
                            f"run {run + 1}: {mode:12} {n:2} viewer(s): "
                            f"CPU {figures['cpu']:.1f} %, "
                            f"{figures['fps']:.1f} fps (slowest viewer), "
                            f"{figures['pps']:.0f} packets/s per viewer",
                            file=sys.stderr,
                            flush=True,
                        )
    finally:
        server.stop()
        stop_children()
    rows = []
    for mode in modes:
        base = results[(mode, counts[0])]["cpu"].median
        for n in counts:
            s = results[(mode, n)]
            extra = (s["cpu"].median - base) / (n - counts[0]) if n > counts[0] else float("nan")
            ratio = ""
            if mode != "passthrough":
                ref = results[("passthrough", n)]["cpu"].median
                ratio = f"{s['cpu'].median / ref:.1f}x" if ref > 0 else "-"
            rows.append(
                [
                    mode,
                    str(n),
                    s["cpu"].spread("{:.1f}"),
                    "-" if n == counts[0] else f"{extra:.2f}",
                    s["fps"].spread("{:.1f}"),
                    f"{s['pps'].median:.0f}",
                    ratio,
                ]
            )
    print(
        _table(
            [
                "mode",
                "viewers",
                "camera CPU % of a core",
                "CPU % per additional viewer",
                "fps (slowest viewer)",
                "packets/s per viewer",
                "CPU vs passthrough",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
