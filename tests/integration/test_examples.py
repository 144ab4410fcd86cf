"""The programs in examples/ run against the real server and peers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.integration.procs import (
    LOOPBACK,
    run_peer,
    server,
    start_peer,
    stop,
    wait_registered,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_echo_answer_example_echoes_an_offer_peers_messages() -> None:
    """examples/echo_answer.py (library API) sends back what `rtc-peer offer` sends."""
    with server() as url:
        echo = subprocess.Popen(
            [
                sys.executable,
                str(EXAMPLES / "echo_answer.py"),
                "--id",
                "echo",
                "--signal",
                url,
                *LOOPBACK,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_registered(echo, prefix="echo: registered")
            result = run_peer(
                "offer",
                "--target",
                "echo",
                "--signal",
                url,
                *LOOPBACK,
                "--interval",
                "0.1",
                "--count",
                "3",
            )
        finally:
            stop(echo)
    assert result.returncode == 0, result.stderr
    assert result.lines("recv ") == ["recv offer-1", "recv offer-2", "recv offer-3"]


def test_local_demo_runs_server_and_two_peers_to_success() -> None:
    """examples/local_demo.py (the README's demo) ends with both peers exiting 0."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "local_demo.py")],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[offer] recv answer-5" in result.stdout
    assert "[answer] recv offer-5" in result.stdout
    assert "demo: OK" in result.stdout


def test_whep_player_example_watches_a_camera_peer_and_ends_its_session() -> None:
    """examples/whep_player.py: POST an offer, decode video frames, DELETE → 200."""
    with server() as url:
        cam = start_peer(
            "answer", "--id", "cam", "--video", "testsrc:160x120@10", "--signal", url, *LOOPBACK
        )
        try:
            wait_registered(cam, timeout=60)
            whep = url.replace("ws://", "http://") + "/whep/cam"
            player = [sys.executable, str(EXAMPLES / "whep_player.py"), whep, "--seconds", "1"]
            result = subprocess.run(
                [*player, *LOOPBACK],
                capture_output=True,
                text=True,
                timeout=120,
            )
        finally:
            stop(cam)
    assert result.returncode == 0, result.stdout + result.stderr
    frames = int(result.stdout.strip().removeprefix("frames: "))
    assert frames > 0
    assert ": HTTP 200" in result.stderr  # the DELETE


def test_whep_player_example_writes_the_offer_the_readme_posts(tmp_path: Path) -> None:
    """--write-offer FILE: a receive-only SDP offer with its candidates (CRLF lines)."""
    offer = tmp_path / "offer.sdp"
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "whep_player.py"), "--write-offer", str(offer), *LOOPBACK],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    sdp = offer.read_bytes().decode()
    assert sdp.startswith("v=0\r\n")
    assert "m=video " in sdp and "a=recvonly" in sdp
    assert "a=candidate:" in sdp and " 127.0.0.1 " in sdp
