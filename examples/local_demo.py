"""The local demo: a signaling server and two peers exchanging messages.

Starts ``rtc-signal serve`` on a free port, an answer peer ``demo-answer`` and
an offer peer calling it; both send a timer message every 0.5 s and stop after
5 sent and 5 received. Everything stays on 127.0.0.1. Output is prefixed with
the process it came from; the exit status is 0 when both peers succeeded.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from typing import IO

PEER = [sys.executable, "-m", "rtc_signal.peers.cli"]
SERVER = [sys.executable, "-m", "rtc_signal.signaling.cli"]
PEER_ARGS = ["--host-address", "127.0.0.1", "--interval", "0.5", "--count", "5"]


def relay(
    name: str, stream: IO[str], ready: threading.Event | None = None, marker: str = ""
) -> threading.Thread:
    """Print a child's lines with a prefix; set ``ready`` on the ``marker`` line."""

    def pump() -> None:
        for line in iter(stream.readline, ""):
            print(f"[{name}] {line}", end="", flush=True)
            if ready is not None and marker and line.startswith(marker):
                ready.set()

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread


def terminate(procs: Iterable[subprocess.Popen[str]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> int:
    server = subprocess.Popen(
        [*SERVER, "serve", "--port", "0", "--log-level", "warning"],
        stdout=subprocess.PIPE,
        text=True,
    )
    procs = [server]
    try:
        assert server.stdout is not None
        first = server.stdout.readline()
        if not first.startswith("listening on "):
            print("demo: the signaling server did not start", file=sys.stderr)
            return 1
        url = first.split()[-1]
        print(f"[server] {first}", end="", flush=True)
        relay("server", server.stdout)

        answer = subprocess.Popen(
            [*PEER, "answer", "--id", "demo-answer", "--signal", url, *PEER_ARGS],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(answer)
        registered = threading.Event()
        assert answer.stdout is not None and answer.stderr is not None
        relay("answer", answer.stdout)
        relay("answer", answer.stderr, registered, "rtc-peer: registered")
        if not registered.wait(15):
            print("demo: the answer peer did not register", file=sys.stderr)
            return 1

        started = time.monotonic()
        offer = subprocess.Popen(
            [*PEER, "offer", "--target", "demo-answer", "--signal", url, *PEER_ARGS],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(offer)
        assert offer.stdout is not None and offer.stderr is not None
        threads = [relay("offer", offer.stdout), relay("offer", offer.stderr)]
        codes = [offer.wait(60), answer.wait(30)]
        for thread in threads:
            thread.join(5)
        elapsed = time.monotonic() - started
        ok = codes == [0, 0]
        print(
            f"demo: {'OK' if ok else 'FAILED'}: offer exited {codes[0]}, answer exited "
            f"{codes[1]}, {elapsed:.1f} s",
            flush=True,
        )
        return 0 if ok else 1
    except subprocess.TimeoutExpired:
        print("demo: a peer did not finish in time", file=sys.stderr)
        return 1
    finally:
        terminate(procs)


if __name__ == "__main__":
    sys.exit(main())
