"""End-to-end: one-time codes and --verify with real `rtc-signal serve` and
`rtc-peer` processes on 127.0.0.1, and a malicious signaling server (a relay
in front of the real one that swaps DTLS fingerprints in the SDPs it relays,
as a server sitting in the middle of the call must)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from rtc_signal.peers.codes import Code, parse_code
from rtc_signal.peers.codewords import WORDS
from rtc_signal.peers.pake import MISMATCH_MESSAGE
from rtc_signal.proto import Command, decode, encode_request
from tests.integration.procs import (
    LOOPBACK,
    _early_stderr,
    server,
    start_file_peer,
    start_peer,
    wait,
    wait_registered,
    wait_until,
)

TIMER = ["--interval", "0.2", "--count", "3"]
CODE_LINE = "rtc-peer: code "
MISMATCH_EXIT = 12


def start_code_owner(url: str, *extra: str) -> tuple[subprocess.Popen[str], Code]:
    """`rtc-peer answer --code`, once it has printed its code."""
    proc = start_peer("answer", "--code", "--signal", url, *LOOPBACK, *TIMER, *extra)
    wait_registered(proc, prefix=CODE_LINE)
    line = _early_stderr[proc.pid][-1]
    return proc, parse_code(line.removeprefix(CODE_LINE).split()[0])


def offer_with(url: str, code: Code | str, *extra: str) -> subprocess.Popen[str]:
    return start_peer(
        "offer", "--code", str(code), "--signal", url, *LOOPBACK, *TIMER, "--id", "caller", *extra
    )


def other_words(code: Code) -> Code:
    """The same number with one wrong word."""
    wrong = WORDS[(WORDS.index(code.words[0]) + 1) % len(WORDS)]
    return Code(code.number, (wrong, *code.words[1:]))


def test_code_call_connects_and_both_sides_print_the_same_sas() -> None:
    with server() as url:
        owner, code = start_code_owner(url, "--verify")
        assert re.fullmatch(r"code-\d+", code.peer_id)
        caller = wait(offer_with(url, code, "--verify"))
        answered = wait(owner)
    assert caller.returncode == 0, caller.stderr
    assert answered.returncode == 0, answered.stderr
    assert len(caller.lines("recv answer")) == 3 and len(answered.lines("recv offer")) == 3
    sas = [
        re.search(r"verify with '[^']+': ((?:[a-z]+ ){4}[a-z]+)$", f.stderr, re.M)
        for f in (caller, answered)
    ]
    assert sas[0] and sas[1] and sas[0].group(1) == sas[1].group(1)


def test_wrong_code_fails_on_both_sides_and_burns_the_code() -> None:
    with server() as url:
        owner, code = start_code_owner(url)
        wrong = wait(offer_with(url, other_words(code)))
        burnt = wait(owner)
        # the right code, too late: its owner is gone
        late = wait(offer_with(url, code))
    assert wrong.returncode == MISMATCH_EXIT and MISMATCH_MESSAGE in wrong.stderr, wrong.stderr
    assert burnt.returncode == MISMATCH_EXIT and MISMATCH_MESSAGE in burnt.stderr, burnt.stderr
    assert late.returncode == 1 and "nobody is waiting" in late.stderr, late.stderr


def test_a_used_code_is_refused() -> None:
    with server() as url:
        owner, code = start_code_owner(url)
        first = wait(offer_with(url, code))
        wait(owner)
        again = wait(offer_with(url, code))
    assert first.returncode == 0, first.stderr
    assert again.returncode == 1 and "nobody is waiting" in again.stderr, again.stderr


def test_bad_code_text_is_a_usage_error() -> None:
    with server() as url:
        bad = wait(offer_with(url, "7-qqqq-zoo"))
    assert bad.returncode == 2 and "not a code word" in bad.stderr


def test_verify_on_a_named_call_prints_the_same_sas_on_both_sides() -> None:
    with server() as url:
        owner = start_peer("answer", "--id", "bob", "--signal", url, *LOOPBACK, *TIMER, "--verify")
        wait_registered(owner)
        caller = wait(
            start_peer("offer", "--target", "bob", "--signal", url, *LOOPBACK, *TIMER, "--verify")
        )
        answered = wait(owner)
    assert caller.returncode == 0 and answered.returncode == 0, caller.stderr + answered.stderr
    words = [re.findall(r"verify with '[^']+': (.*)$", f.stderr, re.M) for f in (caller, answered)]
    assert len(words[0]) == 1 and words[0] == words[1]
    assert len(words[0][0].split()) == 5


# -- a malicious signaling server -------------------------------------------------


def _evil_fingerprints() -> dict[str, str]:
    """Fingerprints of a real DTLS certificate that is not the peers'."""
    from aiortc.rtcdtlstransport import RTCCertificate

    certificate = RTCCertificate.generateCertificate()
    return {f.algorithm.lower(): f.value for f in certificate.getFingerprints()}


_FINGERPRINT_LINE = re.compile(r"^a=fingerprint:(\S+) (\S+)$", re.M)


class FingerprintSwapper:
    """A signaling 'server' that relays every frame to the real one and back,
    except that it replaces the DTLS fingerprints in the Offer and/or Answer
    SDPs with its own certificate's (keeping any other field as it is): what
    a server that sits in the middle of a call must do."""

    def __init__(self, upstream: str, swap: set[Command]) -> None:
        self.upstream = upstream
        self.swap = swap
        self.evil = _evil_fingerprints()
        self.swapped: list[Command] = []
        self.url = ""
        self._ready = threading.Event()
        self._stop: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def rewrite(self, frame: bytes | str) -> bytes | str:
        envelope = decode(frame)
        if envelope.command not in self.swap or not envelope.command.is_request:
            return frame
        request = envelope.request
        document = json.loads(request.body or b"{}")

        def evil_line(match: re.Match[str]) -> str:
            algorithm = match.group(1).lower()
            return f"a=fingerprint:{algorithm} {self.evil.get(algorithm, self.evil['sha-256'])}"

        document["sdp"] = _FINGERPRINT_LINE.sub(evil_line, document["sdp"].replace("\r\n", "\n"))
        document["sdp"] = document["sdp"].replace("\n", "\r\n")
        self.swapped.append(envelope.command)
        body = json.dumps(document).encode()
        return encode_request(envelope.command, request.source, request.target, body)

    async def _relay(self, client: ServerConnection) -> None:
        path = client.request.path if client.request else "/"
        async with connect(self.upstream + path, compression=None) as upstream:

            async def pump(src: object, dst: object) -> None:
                with contextlib.suppress(ConnectionClosed):
                    async for frame in src:  # type: ignore[attr-defined]
                        await dst.send(self.rewrite(frame))  # type: ignore[attr-defined]
                with contextlib.suppress(ConnectionClosed):
                    await dst.close()  # type: ignore[attr-defined]

            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(pump(client, upstream))
                tasks.create_task(pump(upstream, client))

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = self._loop.create_future()
        async with serve(self._relay, "127.0.0.1", 0, compression=None) as ws_server:
            port = next(iter(ws_server.sockets)).getsockname()[1]
            self.url = f"ws://127.0.0.1:{port}"
            self._ready.set()
            await self._stop

    def __enter__(self) -> FingerprintSwapper:
        self._thread.start()
        assert self._ready.wait(10), "the relay did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set_result, None)
        self._thread.join(10)


@contextlib.contextmanager
def malicious_server(swap: set[Command]) -> Iterator[FingerprintSwapper]:
    with server() as upstream, FingerprintSwapper(upstream, swap) as relay:
        yield relay


@pytest.mark.parametrize(
    "swap",
    [{Command.ANSWER}, {Command.OFFER}, {Command.OFFER, Command.ANSWER}],
    ids=["answer", "offer", "both"],
)
def test_a_server_that_swaps_fingerprints_is_detected_by_both_sides(swap: set[Command]) -> None:
    with malicious_server(swap) as relay:
        owner, code = start_code_owner(relay.url)
        caller = wait(offer_with(relay.url, code))
        answered = wait(owner)
    assert relay.swapped, "the relay did not get to swap anything"
    for side in (caller, answered):
        assert side.returncode == MISMATCH_EXIT, side.stderr
        assert MISMATCH_MESSAGE in side.stderr, side.stderr
    assert not caller.lines("recv") and not answered.lines("recv")


# -- files by code: `rtc-peer send FILE...` / `rtc-peer receive CODE` --------------


def start_code_sender(url: str, *files: str) -> tuple[subprocess.Popen[str], Code]:
    proc = start_peer("send", *files, "--signal", url, *LOOPBACK)
    wait_registered(proc, prefix=CODE_LINE)
    line = _early_stderr[proc.pid][-1]
    assert "rtc-peer receive" in line
    return proc, parse_code(line.removeprefix(CODE_LINE).split()[0])


def test_files_sent_by_code_arrive_verified(tmp_path: Path) -> None:
    small, big = tmp_path / "note.txt", tmp_path / "blob.bin"
    small.write_text("hello by code\n")
    big.write_bytes(os.urandom(700_000))
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with server() as url:
        sender, code = start_code_sender(url, str(small), str(big))
        received = wait(
            start_peer("receive", str(code), "--dir", str(inbox), "--signal", url, *LOOPBACK)
        )
        sent = wait(sender)
    assert received.returncode == 0, received.stderr
    assert sent.returncode == 0, sent.stderr
    assert (inbox / "note.txt").read_bytes() == small.read_bytes()
    assert (inbox / "blob.bin").read_bytes() == big.read_bytes()


def test_receive_with_a_wrong_code_stores_nothing_and_burns_the_code(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("not for you\n")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with server() as url:
        sender, code = start_code_sender(url, str(secret))
        wrong = wait(
            start_peer(
                "receive", str(other_words(code)), "--dir", str(inbox), "--signal", url, *LOOPBACK
            )
        )
        burnt = wait(sender)
        late = wait(
            start_peer("receive", str(code), "--dir", str(inbox), "--signal", url, *LOOPBACK)
        )
    for side in (wrong, burnt):
        assert side.returncode == MISMATCH_EXIT and MISMATCH_MESSAGE in side.stderr, side.stderr
    assert late.returncode == 1 and "nobody is waiting" in late.stderr, late.stderr
    assert list(inbox.iterdir()) == []


def test_pipe_by_code_carries_bytes_exactly(tmp_path: Path) -> None:
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(300_000))
    with server() as url:
        common = ["--signal", url, *LOOPBACK, "--pipe"]
        owner = start_file_peer(
            "answer", "--code", *common, stdin=subprocess.DEVNULL, directory=tmp_path, name="owner"
        )
        try:
            wait_until(lambda: CODE_LINE in owner.stderr(), "the owner's code", 20)
            code = owner.stderr().split(CODE_LINE, 1)[1].split()[0]
            with data.open("rb") as stdin:
                caller = start_file_peer(
                    "offer", "--code", code, *common, stdin=stdin, directory=tmp_path, name="caller"
                )
                assert caller.wait(60) == 0, caller.stderr()
            assert owner.wait(60) == 0, owner.stderr()
        finally:
            if owner.proc.poll() is None:
                owner.proc.kill()
    assert owner.stdout() == data.read_bytes()
