"""Real Chromium (Debian's ``/usr/bin/chromium``) in a private network namespace.

Why a namespace: Chromium gathers ICE candidates on every interface it sees
and may pick the machine's own non-loopback address, which tests must never
use. In a namespace holding only ``lo`` and an IPv6-only veth pair (both ends
inside it; without a non-loopback interface Chromium thinks it is offline and
loads nothing), every packet stays on the namespace's loopback. The
signaling server and the CLI peers of a test run in the same namespace
(``ip netns exec``), Playwright drives Chromium from outside through its
DevTools pipe, which needs no network.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parents[2]

#: flags measured to work here (the issue's list) plus what WebRTC on
#: loopback needs: 127.0.0.1 candidates, no mDNS names, fake camera/mic
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]


def unavailable() -> str | None:
    """Why the browser tests cannot run here (None if they can)."""
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} is missing (Debian package chromium; .ci/run installs it)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    if os.geteuid() != 0:
        return "creating a network namespace needs root (CI runs as root)"
    if shutil.which("ip") is None:
        return "the ip command is missing (Debian package iproute2)"
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@contextlib.contextmanager
def namespace(name: str) -> Iterator[str]:
    """A network namespace with ``lo`` and an IPv6-only veth pair; removed after."""
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", name, "link", "add", "rtcb0", "type", "veth", "peer", "name", "rtcb1")
        _ip("-n", name, "addr", "add", "fd72:7463::1/64", "dev", "rtcb0", "nodad")
        _ip("-n", name, "link", "set", "rtcb0", "up")
        _ip("-n", name, "link", "set", "rtcb1", "up")
        yield name
    finally:
        # deleting the namespace deletes its links; kill what still runs in it
        pids = subprocess.run(
            ["ip", "netns", "pids", name], capture_output=True, text=True, timeout=10
        ).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), 9)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


def in_namespace(ns: str, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


@contextlib.contextmanager
def chromium_wrapper(ns: str) -> Iterator[str]:
    """An executable that starts Debian's Chromium inside ``ns``, for Playwright."""
    with tempfile.TemporaryDirectory(prefix="rtc-chromium-") as tmp:
        wrapper = Path(tmp) / "chromium"
        wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {ns} {CHROMIUM} "$@"\n')
        wrapper.chmod(0o755)
        yield str(wrapper)


def python_in(ns: str, module: str, *args: str) -> list[str]:
    """argv running ``python -m module args`` inside ``ns`` with this interpreter."""
    return in_namespace(ns, [sys.executable, "-m", module, *args])
