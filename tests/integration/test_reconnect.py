"""End-to-end reconnect: `rtc-signal serve` is killed (SIGKILL) and restarted
on the same port while an `rtc-peer offer`/`answer` pair exchanges timer
messages over its data channel (real processes on 127.0.0.1)."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

from tests.conftest import start_server_process, stop_server_process, subprocess_env
from tests.integration.procs import (
    LOOPBACK,
    PEER,
    FilePeer,
    start_file_peer,
    wait_file_registered,
    wait_until,
)

COUNT = 300  # timer messages each way, one every INTERVAL: the call spans the outage
INTERVAL = "0.05"
#: the issue's bound: a new caller reaches the answer peer within this of the restart
REACH_WITHIN = 5.0


def _numbers(text: str, prefix: str) -> list[int]:
    return [int(n) for n in re.findall(rf"^recv {prefix}-(\d+)$", text, re.MULTILINE)]


def _stop(peer: FilePeer) -> None:
    if peer.proc.poll() is None:
        peer.proc.terminate()
        try:
            peer.proc.wait(10)
        except subprocess.TimeoutExpired:
            peer.proc.kill()
            peer.proc.wait(5)


def test_call_survives_a_server_restart_and_the_answer_peer_is_reachable_again(
    tmp_path: Path,
) -> None:
    """No timer message lost or reordered across kill+restart; a new offer
    peer reaches the re-registered answer peer within 5 s of the restart."""
    server, url = start_server_process()
    port = str(urlsplit(url).port)
    peers: list[FilePeer] = []
    try:
        common = ["--signal", url, *LOOPBACK]
        answer = start_file_peer(
            "answer",
            "--id",
            "steady",
            *common,
            "--interval",
            INTERVAL,
            "--reconnect-max-delay",
            "1",
            stdin=subprocess.DEVNULL,
            directory=tmp_path,
            name="answer",
        )
        peers.append(answer)
        wait_file_registered(answer)
        offer = start_file_peer(
            "offer",
            "--target",
            "steady",
            *common,
            "--interval",
            INTERVAL,
            "--count",
            str(COUNT),
            stdin=subprocess.DEVNULL,
            directory=tmp_path,
            name="offer",
        )
        peers.append(offer)
        wait_until(lambda: "recv answer-10\n" in offer.stdout().decode(), "the first messages")

        stop_server_process(server, signal.SIGKILL)
        wait_until(lambda: "reconnecting in" in answer.stderr(), "the answer peer to notice")
        time.sleep(1.0)  # down for a while: the channel must not care
        server, _ = start_server_process("--port", port)
        restarted = time.monotonic()
        assert offer.proc.poll() is None, "the call must still run across the restart"

        wait_until(
            lambda: "rtc-peer: registered again as 'steady'" in answer.stderr(),
            "the answer peer to register again",
            timeout=REACH_WITHIN,
        )
        second = subprocess.run(
            [*PEER, "offer", "--target", "steady", *common, "--stdin"],
            input="second caller\n",
            capture_output=True,
            text=True,
            timeout=REACH_WITHIN * 3,
            env=subprocess_env(),
        )
        reached = time.monotonic() - restarted
        assert second.returncode == 0, second.stderr
        wait_until(
            lambda: "recv second caller\n" in answer.stdout().decode(), "the second caller's line"
        )

        assert offer.wait(COUNT * 0.05 + 30) == 0, offer.stderr()
        assert _numbers(offer.stdout().decode(), "answer") == list(range(1, COUNT + 1))
        wait_until(lambda: f"recv offer-{COUNT}\n" in answer.stdout().decode(), "the last message")
        # the answer side's timer runs on both calls: the first call's lines
        # are offer-N, the second caller only sent its one line
        assert _numbers(answer.stdout().decode(), "offer") == list(range(1, COUNT + 1))
        print(f"second caller done {reached:.2f} s after the restart")
    finally:
        for peer in peers:
            _stop(peer)
        stop_server_process(server)
