"""End-to-end: `rtc-peer offer|answer --stdin` (chat) and `--pipe` as real
processes on 127.0.0.1, their stdin fed by the test, their stdout in files.

The end of one side's stdin ends that direction only (an end-of-stream marker,
acknowledged by the other side); the call ends when both stdins have ended.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from tests.integration.procs import (
    LOOPBACK,
    FilePeer,
    server,
    start_file_peer,
    wait_file_registered,
    wait_until,
)

PIPE_BYTES = 3 << 20  # a few MiB: many 64 KiB messages, and backpressure


@contextlib.contextmanager
def session(
    tmp_path: Path, mode: str, offer_stdin: int | IO[Any], answer_stdin: int | IO[Any]
) -> Iterator[tuple[FilePeer, FilePeer]]:
    """A server, an answer peer (registered) and an offer peer calling it, in
    ``mode`` (``--stdin`` or ``--pipe``); yields (offer, answer), killed on exit."""
    with server() as url:
        common = ["--signal", url, *LOOPBACK, mode]
        answer = start_file_peer(
            "answer", "--id", "sink", *common, stdin=answer_stdin, directory=tmp_path, name="answer"
        )
        peers = [answer]
        try:
            wait_file_registered(answer)
            offer = start_file_peer(
                "offer",
                "--target",
                "sink",
                *common,
                stdin=offer_stdin,
                directory=tmp_path,
                name="offer",
            )
            peers.append(offer)
            yield offer, answer
        finally:
            for peer in peers:
                if peer.proc.poll() is None:
                    peer.proc.kill()
                    peer.proc.wait(5)
                if peer.proc.stdin is not None:
                    with contextlib.suppress(OSError):
                        peer.proc.stdin.close()


def wait_offer_id(answer: FilePeer) -> str:
    """The caller's ID, from the answer's "connected to ID" line."""
    prefix = "rtc-peer: connected to "
    wait_until(lambda: prefix in answer.stderr(), "the answer's 'connected to' line")
    line = next(line for line in answer.stderr().splitlines() if line.startswith(prefix))
    return line.removeprefix(prefix)


def assert_exit_zero(*peers: FilePeer) -> None:
    for peer in peers:
        status = peer.wait()
        assert status == 0, peer.stderr()
        assert "Traceback" not in peer.stderr(), peer.stderr()


def feed(peer: FilePeer, data: bytes) -> threading.Thread:
    """Write ``data`` to the peer's stdin pipe in a thread (the pipe fills up
    while the channel applies backpressure) and leave the pipe open."""
    stdin = peer.proc.stdin
    assert stdin is not None

    def write() -> None:
        with contextlib.suppress(BrokenPipeError):
            stdin.write(data)
            stdin.flush()

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    return writer


def test_chat_lines_cross_both_ways_while_both_type(tmp_path: Path) -> None:
    """Lines typed on both sides at once (non-ASCII, an empty line, CRLF) are
    printed by the other side as 'ID: line'; "connected to X" and "X left" go
    to stderr; the end of one stdin ends that direction only, and both exit 0
    once both have ended."""
    offer_lines = ["hello from offer", "héllo wörld ✓ 日本語 🎉", "", "last offer line"]
    answer_lines = ["hi from answer", "ça va? Привет", "bye"]
    with session(tmp_path, "--stdin", subprocess.PIPE, subprocess.PIPE) as (offer, answer):
        feed(offer, "".join(f"{line}\n" for line in offer_lines).encode())
        feed(answer, "".join(f"{line}\r\n" for line in answer_lines).encode())
        offer_id = wait_offer_id(answer)
        offer_expected = "".join(f"sink: {line}\n" for line in answer_lines).encode()
        answer_expected = "".join(f"{offer_id}: {line}\n" for line in offer_lines).encode()
        wait_until(lambda: offer.stdout() == offer_expected, "the answer's lines at the offer")
        wait_until(lambda: answer.stdout() == answer_expected, "the offer's lines at the answer")
        assert offer.proc.stdin is not None
        offer.proc.stdin.close()  # end of the offer's input: its direction only
        wait_until(lambda: f"rtc-peer: {offer_id} left" in answer.stderr(), "the answer's notice")
        assert offer.proc.poll() is None, "the answer's direction is still open"
        assert answer.proc.stdin is not None
        answer.proc.stdin.close()
        assert_exit_zero(offer, answer)
    assert offer.stdout() == offer_expected
    assert answer.stdout() == answer_expected
    assert "rtc-peer: connected to sink\n" in offer.stderr()
    assert "rtc-peer: sink left\n" in offer.stderr()
    assert f"rtc-peer: connected to {offer_id}\n" in answer.stderr()


def test_chat_from_a_file_is_all_delivered_before_the_close(tmp_path: Path) -> None:
    """A chat whose stdin is a file (read in a thread) sends every line, a line
    over 16 KiB as several messages and the last one without a newline too, and
    ends only after they all arrived (the receiver's stdin is /dev/null)."""
    lines = [f"line {n} {'é' * n}" for n in range(200)]
    long_line = "z" * 40_000
    source = tmp_path / "lines.txt"
    source.write_text("\n".join([long_line, *lines]), encoding="utf-8")  # no final newline
    with (
        source.open("rb") as stdin,
        session(tmp_path, "--stdin", stdin, subprocess.DEVNULL) as (offer, answer),
    ):
        assert_exit_zero(offer, answer)
    pieces = ["z" * 16384, "z" * 16384, "z" * 7232]
    received = answer.stdout().decode("utf-8").splitlines()
    assert [line.split(": ", 1)[1] for line in received] == [*pieces, *lines]
    assert offer.stdout() == b""


def test_chat_from_a_terminal_ends_with_ctrl_d(tmp_path: Path) -> None:
    """A terminal on stdin (read in a daemon thread) is chatted from; the call
    goes on after the other side's input ended, until Ctrl-D on the terminal."""
    controller, terminal = os.openpty()
    try:
        with session(tmp_path, "--stdin", subprocess.PIPE, terminal) as (offer, answer):
            os.write(controller, "typed on a términal\n".encode())
            line = "sink: typed on a términal\n".encode()
            wait_until(lambda: offer.stdout() == line, "the line")
            assert offer.proc.stdin is not None
            offer.proc.stdin.close()
            wait_until(lambda: " left" in answer.stderr(), "the offer's end at the answer")
            assert answer.proc.poll() is None, "the terminal's direction is still open"
            os.write(controller, b"\x04")  # Ctrl-D: end of the terminal's input
            assert_exit_zero(offer, answer)
    finally:
        os.close(controller)
        os.close(terminal)


@pytest.mark.parametrize("direction", ["offer-to-answer", "answer-to-offer"])
def test_pipe_copies_a_file_byte_for_byte(tmp_path: Path, direction: str) -> None:
    """`--pipe < big.bin` on one side and `--pipe > out.bin` on the other give
    identical files, in either direction, the receiver's stdin being /dev/null
    (it ends at once); both exit 0."""
    data = os.urandom(PIPE_BYTES)
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    with source.open("rb") as stdin:
        streams: list[int | IO[Any]] = [stdin, subprocess.DEVNULL]
        if direction == "answer-to-offer":
            streams.reverse()
        with session(tmp_path, "--pipe", *streams) as (offer, answer):
            assert_exit_zero(offer, answer)
    sender, receiver = (offer, answer) if direction == "offer-to-answer" else (answer, offer)
    assert receiver.stdout() == data
    assert sender.stdout() == b""


def test_pipe_carries_both_directions_at_once(tmp_path: Path) -> None:
    """Both stdins stream at the same time (pipes, read by the event loop);
    each side's stdout gets exactly the other's bytes."""
    to_answer, to_offer = os.urandom(PIPE_BYTES), os.urandom(PIPE_BYTES // 2)
    with session(tmp_path, "--pipe", subprocess.PIPE, subprocess.PIPE) as (offer, answer):
        writers = [feed(offer, to_answer), feed(answer, to_offer)]
        wait_until(lambda: len(answer.stdout()) >= len(to_answer), "the answer's copy", 60)
        wait_until(lambda: len(offer.stdout()) >= len(to_offer), "the offer's copy", 60)
        for writer in writers:
            writer.join(5)
        for peer in (offer, answer):
            assert peer.proc.stdin is not None
            peer.proc.stdin.close()
        assert_exit_zero(offer, answer)
    assert answer.stdout() == to_answer
    assert offer.stdout() == to_offer


@pytest.mark.parametrize("mode", ["--stdin", "--pipe"])
def test_empty_stdin_on_both_sides_closes_cleanly(tmp_path: Path, mode: str) -> None:
    """Empty stdin on both sides: both close at once (two stream resets
    crossing), nothing is printed, both exit 0."""
    with session(tmp_path, mode, subprocess.DEVNULL, subprocess.DEVNULL) as (offer, answer):
        assert_exit_zero(offer, answer)
    assert (offer.stdout(), answer.stdout()) == (b"", b"")


def test_empty_stdin_on_one_side_leaves_the_other_direction_open(tmp_path: Path) -> None:
    """An offer with nothing to say (/dev/null) ends only its own direction:
    the answer's lines, typed later, still reach it; both exit 0 once the
    answer's input ends too."""
    with session(tmp_path, "--stdin", subprocess.DEVNULL, subprocess.PIPE) as (offer, answer):
        wait_until(lambda: " left" in answer.stderr(), "the offer's end at the answer")
        assert answer.proc.stdin is not None
        answer.proc.stdin.write(b"still here\n")
        answer.proc.stdin.close()
        assert_exit_zero(offer, answer)
    assert offer.stdout() == b"sink: still here\n"
    assert answer.stdout() == b""
