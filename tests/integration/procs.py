"""Helpers to run rtc-signal and rtc-peer as real subprocesses on loopback."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tests.conftest import start_server_process, stop_server_process

PEER = [sys.executable, "-m", "rtc_signal.peers.cli"]
LOOPBACK = ["--host-address", "127.0.0.1"]
FAST = ["--interval", "0.2", "--count", "5"]


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str

    def lines(self, prefix: str) -> list[str]:
        return [line for line in self.stdout.splitlines() if line.startswith(prefix)]


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM, timeout: float = 10) -> Finished:
    """Signal ``proc`` if still running and collect its output (bounded wait)."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=5)
    early = "".join(_early_stderr.pop(proc.pid, []))
    return Finished(proc.returncode, out or "", early + (err or ""))


@contextlib.contextmanager
def server(*extra: str) -> Iterator[str]:
    """A real ``rtc-signal serve`` on a free loopback port; yields its ws:// URL."""
    proc, url = start_server_process(*extra)
    try:
        yield url
    finally:
        stop_server_process(proc)


def start_peer(role: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*PEER, role, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def wait(proc: subprocess.Popen[str], timeout: float = 30) -> Finished:
    """Wait for a peer to exit by itself (killed, and the test fails, on timeout)."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=5)
        raise AssertionError(f"process did not exit within {timeout} s:\n{out}\n{err}") from None
    return Finished(proc.returncode, out, "".join(_early_stderr.pop(proc.pid, [])) + err)


def run_peer(
    role: str, *args: str, timeout: float = 30, env: dict[str, str] | None = None
) -> Finished:
    return wait(start_peer(role, *args, env=env), timeout)


_early_stderr: dict[int, list[str]] = {}


def wait_registered(
    proc: subprocess.Popen[str], timeout: float = 15, prefix: str = "rtc-peer: registered as"
) -> None:
    """Wait until an answer peer process says it registered (a stderr line)."""
    assert proc.stderr is not None
    stderr = proc.stderr
    seen = _early_stderr.setdefault(proc.pid, [])
    found = threading.Event()

    def read_until_ready() -> None:
        # A thread, not select(): readline() buffers beyond the line it returns.
        for line in iter(stderr.readline, ""):
            seen.append(line)
            if line.startswith(prefix):
                found.set()
                return

    reader = threading.Thread(target=read_until_ready, daemon=True)
    reader.start()
    if found.wait(timeout):
        reader.join()
        return
    proc.kill()
    reader.join(5)
    raise AssertionError("answer peer did not register:\n" + "".join(seen))


@dataclass
class FilePeer:
    """A peer process whose stdout and stderr go to files: bytes kept exactly
    (pipe mode), and never a full pipe however much it writes."""

    proc: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path

    def stdout(self) -> bytes:
        return self.stdout_path.read_bytes()

    def stderr(self) -> str:
        return self.stderr_path.read_text("utf-8", "replace")

    def wait(self, timeout: float = 30) -> int:
        """The exit status (killed, and the test fails, if it does not exit in time)."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError(
                f"process did not exit within {timeout} s:\n{self.stderr()}"
            ) from None


def start_file_peer(
    role: str, *args: str, stdin: int | IO[Any], directory: Path, name: str
) -> FilePeer:
    """Start ``rtc-peer ROLE ARGS`` with the given stdin (a file, a descriptor,
    ``subprocess.PIPE`` or ``DEVNULL``); stdout/stderr go to ``directory/name.out|.err``."""
    out, err = directory / f"{name}.out", directory / f"{name}.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen([*PEER, role, *args], stdin=stdin, stdout=stdout, stderr=stderr)
    return FilePeer(proc, out, err)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 15) -> None:
    """Poll ``condition`` until it holds; AssertionError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def wait_file_registered(peer: FilePeer, timeout: float = 15) -> None:
    """Wait until an answer :class:`FilePeer` says on stderr that it registered."""

    def registered() -> bool:
        if peer.proc.poll() is not None:
            raise AssertionError(f"answer peer exited {peer.proc.returncode}:\n{peer.stderr()}")
        return "rtc-peer: registered as" in peer.stderr()

    wait_until(registered, "the answer peer to register", timeout)
