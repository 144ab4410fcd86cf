"""rtc-peer fails at once, with what to do, where a set-up mistake used to
wait out the connect timeout or give a puzzling error (issue 14, item 6):
real CLI processes, one of them in a network namespace that has only lo."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.integration.procs import LOOPBACK, run_peer, server

NOT_OURS = "198.51.100.77"  # RFC 5737 documentation address: no interface has it


def test_host_address_not_of_this_machine_is_a_usage_error() -> None:
    """--host-address 198.51.100.77: exit 2 naming the option, before any connection
    (the signaling URL is unreachable on purpose: it is never tried)."""
    result = run_peer(
        "offer",
        "--target",
        "x",
        "--signal",
        "ws://127.0.0.1:9",
        "--host-address",
        NOT_OURS,
        "--connect-timeout",
        "300",
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "--host-address" in result.stderr
    assert f"{NOT_OURS} is not an address of this machine" in result.stderr


def test_signal_url_with_the_offer_path_is_stripped_with_a_warning() -> None:
    """--signal ws://host:port/offer: a warning, then the server is reached (the
    unknown target's refusal proves it; no 404 on /offer/offer)."""
    with server() as url:
        result = run_peer(
            "offer", "--target", "nobody", "--signal", url + "/offer", *LOOPBACK, timeout=60
        )
    assert result.returncode == 1, result.stderr
    assert "--signal takes the server's URL without /offer" in result.stderr
    assert f"using {url}" in result.stderr
    assert "404" in result.stderr and "nobody" in result.stderr  # the unknown target
    assert "/offer/offer" not in result.stderr


def test_signal_url_with_an_unknown_path_gets_a_404_that_says_what_to_do() -> None:
    with server() as url:
        result = run_peer("offer", "--target", "x", "--signal", url + "/nope", *LOOPBACK)
    assert result.returncode == 1, result.stderr
    assert "HTTP 404" in result.stderr
    assert f"no signaling endpoint at {url}/nope/offer" in result.stderr
    assert "without a path" in result.stderr


_LOOPBACK_ONLY_HOST = """
import subprocess, sys
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
from tests.integration.procs import run_peer, server
with server() as url:
    result = run_peer("offer", "--target", "x", "--signal", url,
                      "--connect-timeout", "300", "--stdin", timeout=60)
print(result.returncode)
sys.stdout.write(result.stderr)
"""


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None,
    reason="needs root, unshare and ip (a network namespace)",
)
def test_chat_on_a_host_with_only_loopback_fails_at_once_with_the_hint() -> None:
    """A host whose only address is loopback (a fresh network namespace): the chat
    exits 1 at once saying --host-address 127.0.0.1 or an ICE server is needed,
    instead of waiting out its (here 300 s) connect timeout."""
    proc = subprocess.run(
        ["unshare", "--net", sys.executable, "-c", _LOOPBACK_ONLY_HOST],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    code, _, stderr = proc.stdout.partition("\n")
    assert code == "1", stderr
    assert "no ICE candidate could be gathered on this machine" in stderr
    assert "no network address but loopback" in stderr
    assert "--host-address 127.0.0.1" in stderr and "--ice-server" in stderr
