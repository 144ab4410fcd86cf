"""Call set-up time with a real Chromium peer, against aiortc <-> aiortc.

Everything runs in a private network namespace (lo + an IPv6-only veth, as
the browser tests do): ``rtc-signal serve``, the CLI peers and Debian's
Chromium driven by Playwright. Each scenario makes ``--runs`` calls and
reports the median time from the offer to the open data channel:

- page -> ``rtc-peer answer`` (measured in the page: offer made -> open)
- page -> page (caller page's clock)
- ``rtc-peer offer`` -> page (callee page's clock: offer received -> open)
- ``rtc-peer bench`` -> ``rtc-peer answer`` (the baseline: aiortc at both
  ends, offer sent -> open, as ``rtc-peer bench --json`` reports it)

Needs root (namespaces), /usr/bin/chromium and playwright.

    python benchmarks/browser.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _common import machine, table  # noqa: E402

from tests.browser import harness  # noqa: E402

SETUP = "Array.from(window.rtcSignal.sessions.values()).map(s => s.setupMs).filter(x => x !== null)"


def start(ns: str, module: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        harness.python_in(ns, module, *args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


def wait_line(stream: Any, pattern: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    regex = re.compile(pattern)
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        if regex.search(line):
            return str(line)
    raise RuntimeError(f"no line matching {pattern!r} within {timeout} s")


def page_setup(browser: Any, url: str, timeout_ms: int = 20_000) -> float:
    """Open ``url`` (which calls someone), return the caller page's set-up ms."""
    context = browser.new_context(bypass_csp=True)
    try:
        page = context.new_page()
        page.goto(url)
        page.wait_for_function(f"{SETUP}.length > 0", timeout=timeout_ms)
        return float(page.evaluate(f"{SETUP}[0]"))
    finally:
        context.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    why = harness.unavailable()
    if why is not None:
        print(f"cannot run: {why}", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    results: dict[str, list[float]] = {}
    procs: list[subprocess.Popen[str]] = []
    with harness.namespace(f"rtcbench{__import__('os').getpid()}") as ns:
        try:
            server = start(ns, "rtc_signal.signaling.cli", "serve", "--port", "0")
            procs.append(server)
            url = re.search(r"ws://\S+", wait_line(server.stdout, "listening on"))
            assert url is not None
            ws_url = url.group(0)
            http_url = ws_url.replace("ws://", "http://", 1)
            loopback = ["--signal", ws_url, "--host-address", "127.0.0.1"]
            answer = start(ns, "rtc_signal.peers.cli", "answer", "--id", "cli", *loopback)
            procs.append(answer)
            wait_line(answer.stderr, "registered as")
            with harness.chromium_wrapper(ns) as wrapper, sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=wrapper, args=harness.CHROMIUM_ARGS
                )
                callee_context = browser.new_context(bypass_csp=True)
                callee = callee_context.new_page()
                callee.goto(f"{http_url}/?id=page")
                callee.wait_for_function("window.rtcSignal.signaling === 'registered'")
                for run in range(args.runs):
                    results.setdefault("page -> rtc-peer answer", []).append(
                        page_setup(browser, f"{http_url}/?target=cli&id=p{run}")
                    )
                    results.setdefault("page -> page", []).append(
                        page_setup(browser, f"{http_url}/?target=page&id=q{run}")
                    )
                    offer = start(
                        ns, "rtc_signal.peers.cli", "offer", "--target", "page", "--id", f"o{run}",
                        "--interval", "0.05", "--count", "1", *loopback,
                    )  # fmt: skip
                    callee.wait_for_function(
                        f"window.rtcSignal.sessions.has('o{run}') && "
                        f"window.rtcSignal.sessions.get('o{run}').setupMs !== null",
                        timeout=20_000,
                    )
                    results.setdefault("rtc-peer offer -> page", []).append(
                        float(callee.evaluate(f"window.rtcSignal.sessions.get('o{run}').setupMs"))
                    )
                    offer.kill()
                    offer.wait(10)
                    bench = subprocess.run(
                        harness.python_in(
                            ns, "rtc_signal.peers.cli", "bench", "--target", "cli",
                            "--seconds", "0.3", "--json", *loopback,
                        ),
                        capture_output=True, text=True, timeout=60, cwd=REPO,
                    )  # fmt: skip
                    if bench.returncode != 0:
                        raise RuntimeError(f"rtc-peer bench failed: {bench.stderr[-500:]}")
                    results.setdefault("rtc-peer bench -> rtc-peer answer (baseline)", []).append(
                        float(json.loads(bench.stdout)["setup_ms"])
                    )
                callee_context.close()
                browser.close()
        finally:
            for proc in procs:
                proc.kill()
                proc.wait(10)
    baseline = statistics.median(results["rtc-peer bench -> rtc-peer answer (baseline)"])
    rows = []
    for name, values in results.items():
        median = statistics.median(values)
        rows.append(
            [
                name,
                f"{median:.0f}",
                f"{min(values):.0f}-{max(values):.0f}",
                f"{median / baseline:.2f}x",
            ]
        )
    print(machine())
    print(f"call set-up: offer -> open data channel, {args.runs} runs each, loopback in a netns")
    print(table(["scenario", "median ms", "range ms", "vs baseline"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
