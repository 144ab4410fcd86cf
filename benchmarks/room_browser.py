"""What a room's mesh costs the browser: N Chromium pages with cameras in one room.

For N = 1..``--max-pages`` (N = 1, a page alone with its camera, is the
baseline: capture and preview, nothing sent), each run starts one
``rtc-signal serve`` and one headless Chromium (Debian's, Chromium's fake
camera) in a private network namespace, as the browser tests do, opens N
pages at ``/?room=bench&video=1`` and waits until every page plays every
other page's video. Then, over ``--seconds`` of steady call, it measures:

- **Chromium CPU**: user + system CPU of every Chromium process (browser,
  renderers, GPU and utility processes: the N pages share them), in % of
  one core;
- **machine busy**: the whole machine's busy CPU over the same window, in %
  of all cores (the other load the figures were taken under);
- **sent fps / width**: median over the pages' outgoing video streams (one
  per other member) of ``framesPerSecond`` and ``frameWidth`` (the camera
  asks for 640x360 at up to 24 fps; WebRTC scales down when CPU-limited);
- **CPU-limited**: outgoing streams whose ``qualityLimitationReason`` is
  ``cpu``, of all;
- **received fps**: median over the pages' incoming video streams.

Each figure is the median (min-max) of ``--runs`` runs. Needs root, the
``chromium`` package and playwright. Bounded: every wait has a timeout.

    python benchmarks/room_browser.py [--runs 2] [--max-pages 4] [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _common import Sample, cpu_seconds, machine, machine_busy, table  # noqa: E402

from tests.browser import harness  # noqa: E402

PLAYING_ALL = """(others) => others.every((m) => {
    const v = document.querySelector(`video[data-member='${m}']`);
    if (!v || v.videoWidth === 0) return false;
    v.benchTimes = (v.benchTimes || []).concat([v.currentTime]);
    return v.benchTimes.length > 2 && v.benchTimes.at(-1) > v.benchTimes[0];
})"""

VIDEO_STATS = """async () => {
    const out = { sent: [], received: [] };
    for (const session of window.rtcRoom.room.sessions.values()) {
        for (const s of (await session.pc.getStats()).values()) {
            if (s.kind !== 'video') continue;
            if (s.type === 'outbound-rtp') {
                out.sent.push([s.framesPerSecond ?? 0, s.frameWidth ?? 0,
                               s.qualityLimitationReason ?? 'none']);
            } else if (s.type === 'inbound-rtp') {
                out.received.push(s.framesPerSecond ?? 0);
            }
        }
    }
    return out;
}"""


def chromium_pids(ns: str) -> list[int]:
    listed = subprocess.run(
        ["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=10
    ).stdout.split()
    pids = []
    for pid in map(int, listed):
        try:
            with open(f"/proc/{pid}/comm") as f:
                if "chrom" in f.read():
                    pids.append(pid)
        except OSError:
            continue
    return pids


def chromium_cpu(pids: list[int]) -> dict[int, float]:
    seconds = {}
    for pid in pids:
        try:
            seconds[pid] = cpu_seconds(pid)
        except OSError:
            continue
    return seconds


def one_run(ns: str, browser: Any, url: str, pages_wanted: int, seconds: float) -> dict[str, Any]:
    names = [f"p{i}" for i in range(1, pages_wanted + 1)]
    contexts = []
    try:
        pages = {}
        for name in names:
            context = browser.new_context(bypass_csp=True, viewport={"width": 900, "height": 700})
            contexts.append(context)
            page = context.new_page()
            page.goto(f"{url}/?room=bench&video=1&id={name}", timeout=30_000)
            page.wait_for_function(
                "window.rtcRoom && window.rtcRoom.state === 'joined'", timeout=30_000
            )
            pages[name] = page
        for name, page in pages.items():
            others = [n for n in names if n != name]
            page.wait_for_function(PLAYING_ALL, arg=others, timeout=90_000, polling=500)
        time.sleep(2)  # let the encoders settle after the last join
        pids = chromium_pids(ns)
        cpu_before, busy_before, t0 = chromium_cpu(pids), machine_busy(), time.monotonic()
        time.sleep(seconds)
        cpu_after, busy_after, elapsed = chromium_cpu(pids), machine_busy(), time.monotonic() - t0
        used = sum(cpu_after[p] - cpu_before[p] for p in cpu_after if p in cpu_before)
        sent: list[list[Any]] = []
        received: list[float] = []
        for page in pages.values():
            stats = page.evaluate(VIDEO_STATS)
            sent += stats["sent"]
            received += stats["received"]
        return {
            "chromium": 100 * used / elapsed,
            "busy": 100 * (busy_after - busy_before) / elapsed / (os.cpu_count() or 1),
            "sent_fps": statistics.median([s[0] for s in sent]) if sent else float("nan"),
            "sent_width": statistics.median([s[1] for s in sent]) if sent else float("nan"),
            "cpu_limited": (sum(1 for s in sent if s[2] == "cpu"), len(sent)),
            "received_fps": statistics.median(received) if received else float("nan"),
        }
    finally:
        for context in contexts:
            context.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--max-pages", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    why = harness.unavailable()
    if why is not None:
        print(f"cannot run: {why}", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    results: dict[int, dict[str, Any]] = {}
    with harness.namespace(f"rtcroom{os.getpid()}") as ns:
        server = subprocess.Popen(
            harness.python_in(ns, "rtc_signal.signaling.cli", "serve", "--port", "0"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=REPO,
        )
        try:
            assert server.stdout is not None
            found = None
            for _ in range(20):  # the first lines it prints (bounded: it prints few)
                line = server.stdout.readline()
                found = re.search(r"listening on (ws://\S+)", line)
                if found is not None or not line:
                    break
            if found is None:
                raise RuntimeError("the server did not say where it listens")
            http_url = found.group(1).replace("ws://", "http://", 1)
            with harness.chromium_wrapper(ns) as wrapper, sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=wrapper, args=harness.CHROMIUM_ARGS, timeout=60_000
                )
                try:
                    for _ in range(args.runs):
                        for n in range(1, args.max_pages + 1):
                            run = one_run(ns, browser, http_url, n, args.seconds)
                            row = results.setdefault(n, {"limited": []})
                            for key in (
                                "chromium",
                                "busy",
                                "sent_fps",
                                "sent_width",
                                "received_fps",
                            ):
                                row.setdefault(key, Sample()).add(run[key])
                            row["limited"].append(run["cpu_limited"])
                finally:
                    browser.close()
        finally:
            server.kill()
            server.wait(10)
    rows = []
    baseline = results[1]["chromium"].median
    for n, row in sorted(results.items()):
        limited = "-" if n == 1 else ", ".join(f"{a}/{b}" for a, b in row["limited"])
        rows.append(
            [
                f"{n} page{'s' if n > 1 else ''}" + (" (baseline)" if n == 1 else ""),
                row["chromium"].spread("{:.0f}"),
                f"{row['chromium'].median / baseline:.1f}x",
                row["busy"].spread("{:.0f}"),
                "-" if n == 1 else row["sent_fps"].spread("{:.0f}"),
                "-" if n == 1 else row["sent_width"].spread("{:.0f}"),
                limited,
                "-" if n == 1 else row["received_fps"].spread("{:.0f}"),
            ]
        )
    print(machine("playwright"))
    print(
        f"a room of N pages with fake cameras in one headless Chromium, {args.seconds:g} s "
        f"of steady call, median (min-max) of {args.runs} runs"
    )
    print(
        table(
            [
                "members",
                "Chromium CPU % of a core",
                "vs 1 page",
                "machine busy %",
                "sent fps",
                "sent width",
                "CPU-limited streams",
                "received fps",
            ],
            rows,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
