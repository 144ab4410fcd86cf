"""``rtc-signal serve --workers N``: N server processes on one port.

Each worker is the same ``rtc-signal serve`` command run as a child process
with ``--reuse-port`` (SO_REUSEPORT: the kernel spreads new connections over
the workers' listening sockets) and its own node ID, so that the workers are
nodes of one cluster on the ``--redis`` that they share: a peer on worker 1
can call a peer on worker 2. The parent only starts them, prints the URL once
they all listen, forwards SIGINT/SIGTERM, and exits (non-zero) if a worker
dies: restarting is the service manager's job, as for a single process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

from rtc_signal.signaling.handover import format_links

log = logging.getLogger(__name__)

#: how long a worker may take to print its "listening on" line
START_TIMEOUT = 30.0
#: how long workers may take to exit after SIGTERM before they are killed
STOP_TIMEOUT = 10.0
#: workers linked to each other (N * (N - 1) sockets in the parent at start)
MAX_LINKED_WORKERS = 16
#: socket buffer of a sibling link
LINK_BUFFER = 1024 * 1024


def free_port(host: str) -> int:
    """A free TCP port on ``host`` (``--port 0`` with workers: one port for all)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def worker_argv(
    argv: Sequence[str], port: int, node_id: str, links: dict[str, int] | None = None
) -> list[str]:
    """The command line of one worker: ours, as one reuse-port node (the
    options added last win over the user's)."""
    return [
        sys.executable,
        "-m",
        "rtc_signal.signaling.cli",
        *argv,
        "--workers",
        "1",
        "--reuse-port",
        "--port",
        str(port),
        "--node-id",
        node_id,
        "--sibling-links",
        format_links(links or {}),
    ]


def sibling_links(nodes: Sequence[str]) -> tuple[list[dict[str, int]], list[socket.socket]]:
    """One SOCK_SEQPACKET socket pair per pair of workers: worker i's links
    (sibling node -> its end's fd), and every socket (to close once the
    workers have their copies). None beyond MAX_LINKED_WORKERS workers."""
    links: list[dict[str, int]] = [{} for _ in nodes]
    if len(nodes) > MAX_LINKED_WORKERS:
        log.warning(
            "more than %d workers: connections are not moved between them, cross-worker "
            "calls go through Redis",
            MAX_LINKED_WORKERS,
        )
        return links, []
    socks: list[socket.socket] = []
    for i in range(len(nodes)):
        for j in range(i + 1, len(nodes)):
            a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            for sock in (a, b):
                # room for several handovers in flight (each up to ~96 KiB)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, LINK_BUFFER)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, LINK_BUFFER)
            links[i][nodes[j]] = a.fileno()
            links[j][nodes[i]] = b.fileno()
            socks += (a, b)
    return links, socks


def _first_line(proc: subprocess.Popen[str], deadline: float) -> str | None:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            return proc.stdout.readline()
        if proc.poll() is not None:
            return None
    return None


def run_workers(
    count: int, argv: Sequence[str], port: int, node_prefix: str, on_ready: Callable[[str], None]
) -> int:
    """Start ``count`` workers, wait for SIGINT/SIGTERM or a worker's death;
    return the exit status (0 after a signal)."""
    stop: list[int] = []

    def handler(signum: int, _frame: object) -> None:
        stop.append(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    procs: list[subprocess.Popen[str]] = []
    try:
        url = ""
        deadline = time.monotonic() + START_TIMEOUT
        nodes = [f"{node_prefix}-{i + 1}" for i in range(count)]
        links, socks = sibling_links(nodes)
        try:
            for node, mine in zip(nodes, links, strict=True):
                procs.append(
                    subprocess.Popen(
                        worker_argv(argv, port, node, mine),
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE,
                        text=True,
                        pass_fds=tuple(mine.values()),
                    )
                )
        finally:
            for sock in socks:  # (the workers have their own copies)
                sock.close()
        for i, proc in enumerate(procs):
            line = _first_line(proc, deadline)
            if not line or not line.startswith("listening on "):
                log.error(
                    "worker %d did not start (exit code %s, said %r)", i + 1, proc.poll(), line
                )
                return 1
            url = line.removeprefix("listening on ").strip()
        log.info("%d workers listening on %s", count, url)
        on_ready(url)
        while not stop:
            for i, proc in enumerate(procs):
                if proc.poll() is not None:
                    log.error(
                        "worker %d exited with %s; stopping the others", i + 1, proc.returncode
                    )
                    return 1
            time.sleep(0.2)
        return 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT)
            if proc.stdout is not None:
                proc.stdout.close()
        for signum, old in previous.items():
            signal.signal(signum, old)


def node_prefix() -> str:
    """The workers' node IDs start with this (distinct per parent process)."""
    return f"{socket.gethostname()}-{os.getpid()}"
