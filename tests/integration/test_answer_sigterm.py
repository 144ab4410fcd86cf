"""`rtc-peer answer` stopped with SIGTERM (a service manager's stop) closes
cleanly: exit 143, and the server frees its ID at once (no reconnect hold),
so a restarted peer registers the same ID straight away."""

from __future__ import annotations

import signal
import subprocess

from tests.integration.procs import LOOPBACK, PEER, server, start_peer, stop, wait_registered


def test_sigterm_closes_cleanly_and_a_restart_gets_the_id_at_once() -> None:
    """SIGTERM: exit 143 after a clean close; the same ID registers again immediately."""
    with server() as url:
        first = start_peer("answer", "--id", "svc", "--signal", url, *LOOPBACK)
        try:
            wait_registered(first)
            done = stop(first, signal.SIGTERM)
            assert done.returncode == 128 + signal.SIGTERM, done.stderr
            again = start_peer("answer", "--id", "svc", "--signal", url, *LOOPBACK)
            try:
                wait_registered(again, timeout=10)  # not 409 "held for its reconnecting peer"
            finally:
                stop(again)
        finally:
            if first.poll() is None:
                first.kill()
                first.wait(5)


def test_sigkill_leaves_the_id_held_for_the_dead_peer() -> None:
    """SIGKILL (a crash): the server holds the ID; a new peer gets 409 and exits 1."""
    with server() as url:
        first = start_peer("answer", "--id", "crash", "--signal", url, *LOOPBACK)
        try:
            wait_registered(first)
            stop(first, signal.SIGKILL)
            second = subprocess.run(
                [*PEER, "answer",
                 "--id", "crash", "--signal", url, *LOOPBACK],
                capture_output=True, text=True, timeout=20,
            )  # fmt: skip
            assert second.returncode == 1
            assert "held for its reconnecting peer" in second.stderr
        finally:
            if first.poll() is None:
                first.kill()
                first.wait(5)
