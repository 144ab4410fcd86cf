"""File transfer end to end: `rtc-peer send` and `rtc-peer answer --accept-files`
as real processes over a real `rtc-signal serve` on 127.0.0.1.

What the CLI cannot send (a name with a path in it, a header that does not
match the data) is sent by a library-level sender in this process, through
the same protocol functions the CLI uses, to a real answer peer process.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rtc_signal.peers.files import (
    FILES_LABEL,
    FileHeader,
    FileStats,
    FileTransferError,
    HashMismatch,
    SizeMismatch,
    UnsafeName,
    describe_file,
    send_file,
)
from rtc_signal.peers.ice import IceSettings
from rtc_signal.peers.progress import Progress
from rtc_signal.peers.session import PeerConfig, call
from tests.conftest import run
from tests.integration.procs import (
    LOOPBACK,
    Finished,
    run_peer,
    server,
    start_peer,
    stop,
    wait_registered,
)


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    """One signaling server for the module (each test registers its own IDs)."""
    with server() as signal_url:
        yield signal_url


@dataclass
class AnswerPeer:
    proc: subprocess.Popen[str]
    finished: Finished | None = None


@contextlib.contextmanager
def answer_peer(url: str, peer_id: str, *args: str) -> Iterator[AnswerPeer]:
    """A registered `rtc-peer answer` process; interrupted (SIGINT) on exit,
    its output then in ``.finished``."""
    peer = AnswerPeer(start_peer("answer", "--id", peer_id, "--signal", url, *LOOPBACK, *args))
    try:
        wait_registered(peer.proc)
        yield peer
    finally:
        peer.finished = stop(peer.proc, signal.SIGINT)


def send(url: str, target: str, *files: Path) -> Finished:
    return run_peer("send", *map(str, files), "--target", target, "--signal", url, *LOOPBACK)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def listing(directory: Path) -> list[str]:
    """Every name in ``directory``, dot files (temporary files) included."""
    return sorted(os.listdir(directory))


def last_line(result: Finished) -> str:
    return result.stderr.strip().splitlines()[-1]


async def send_headers(
    url: str, target: str, source: Path, headers: list[FileHeader]
) -> list[FileStats | FileTransferError]:
    """Library-level sender: one call, each header announced with ``source``'s
    bytes, the outcome of each (the receiver goes on after a refusal)."""
    config = PeerConfig(url, IceSettings(host_addresses=("127.0.0.1",)), connect_timeout=15)
    outcomes: list[FileStats | FileTransferError] = []
    async with call(config, target, label=FILES_LABEL) as c:
        for header in headers:
            try:
                outcomes.append(await send_file(c.channel, source, header))
            except FileTransferError as exc:
                outcomes.append(exc)
    return outcomes


def test_empty_file_is_stored_empty(url: str, tmp_path: Path) -> None:
    """A 0-byte file arrives as a 0-byte file; both sides print a summary line."""
    inbox, source = tmp_path / "inbox", tmp_path / "empty.bin"
    inbox.mkdir()
    source.write_bytes(b"")
    with answer_peer(url, "files-empty", "--accept-files", str(inbox)) as rx:
        sent = send(url, "files-empty", source)
    assert sent.returncode == 0, sent.stderr
    assert listing(inbox) == ["empty.bin"]
    assert (inbox / "empty.bin").stat().st_size == 0
    assert "sent empty.bin (0 bytes) in " in sent.stderr
    assert rx.finished is not None and "received empty.bin (0 bytes) in " in rx.finished.stderr


def test_few_mib_file_arrives_with_the_same_sha256(url: str, tmp_path: Path) -> None:
    """A 3 MiB + 7 B file (not whole chunks) arrives byte for byte; a summary line says MiB/s."""
    inbox, source = tmp_path / "inbox", tmp_path / "blob.bin"
    inbox.mkdir()
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    with answer_peer(url, "files-big", "--accept-files", str(inbox)):
        sent = send(url, "files-big", source)
    assert sent.returncode == 0, sent.stderr
    assert listing(inbox) == ["blob.bin"]
    assert sha256(inbox / "blob.bin") == sha256(source)
    assert f"sent blob.bin ({3 * 1024 * 1024 + 7} bytes) in " in sent.stderr
    assert " MiB/s" in sent.stderr and " MB/s" not in sent.stderr


def test_several_files_in_one_send(url: str, tmp_path: Path) -> None:
    """Several files in one call all arrive intact, in the order given."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    sources = []
    for name, size in (("one.txt", 12), ("two.bin", 65537), ("three.bin", 300_000)):
        path = tmp_path / name
        path.write_bytes(os.urandom(size))
        sources.append(path)
    with answer_peer(url, "files-many", "--accept-files", str(inbox)) as rx:
        sent = send(url, "files-many", *sources)
    assert sent.returncode == 0, sent.stderr
    assert listing(inbox) == sorted(p.name for p in sources)
    for path in sources:
        assert sha256(inbox / path.name) == sha256(path), path.name
    summaries = [line.split()[1] for line in sent.stderr.splitlines() if line.startswith("sent ")]
    assert summaries == ["one.txt", "two.bin", "three.bin"]
    assert rx.finished is not None
    assert rx.finished.stderr.count("received ") == 3


@pytest.mark.parametrize(
    ("wrong", "error", "exit_code", "words"),
    [
        ("sha256", HashMismatch, 7, "SHA-256"),
        ("size", SizeMismatch, 6, "bytes received"),
    ],
)
def test_data_not_matching_its_header_is_refused_and_leaves_nothing(
    url: str,
    tmp_path: Path,
    wrong: str,
    error: type[FileTransferError],
    exit_code: int,
    words: str,
) -> None:
    """A header hash or size not matching the data is refused; no file is left; the call goes on."""
    inbox, source = tmp_path / "inbox", tmp_path / "data.bin"
    inbox.mkdir()
    source.write_bytes(os.urandom(200_000))
    right = run(describe_file(source))
    bad = (
        FileHeader(right.name, right.size, hashlib.sha256(b"other data").hexdigest())
        if wrong == "sha256"
        else FileHeader(right.name, right.size + 1, right.sha256)  # 1 byte short
    )
    with answer_peer(url, f"files-bad-{wrong}", "--accept-files", str(inbox)) as rx:
        outcomes = run(send_headers(url, f"files-bad-{wrong}", source, [bad]))
        assert listing(inbox) == [], "a refused file must leave no (temporary) file"
        retried = run(send_headers(url, f"files-bad-{wrong}", source, [bad, right]))
        assert rx.proc.poll() is None, "a failed transfer must not end the answer peer"
    refused = outcomes[0]
    assert isinstance(refused, error), refused
    assert refused.exit_code == exit_code
    assert words in str(refused) and "'data.bin' refused by the receiver" in str(refused)
    assert isinstance(retried[0], error) and isinstance(retried[1], FileStats)
    assert listing(inbox) == ["data.bin"] and sha256(inbox / "data.bin") == right.sha256
    assert rx.finished is not None and words in rx.finished.stderr  # the receiver says why too


def test_names_that_could_leave_the_directory_are_refused(url: str, tmp_path: Path) -> None:
    """Traversal, absolute, separator, empty, '.', '..', NUL names are refused; nothing written."""
    inbox, source = tmp_path / "inbox", tmp_path / "payload.bin"
    inbox.mkdir()
    source.write_bytes(b"not for you")
    right = run(describe_file(source))
    names = [
        "../escaped.bin",
        str(tmp_path / "absolute.bin"),
        "sub/dir.bin",
        "back\\slash.bin",
        "",
        ".",
        "..",
        "nul\0byte.bin",
        "new\nline.bin",
    ]
    headers = [FileHeader(name, right.size, right.sha256) for name in names]
    with answer_peer(url, "files-unsafe", "--accept-files", str(inbox)) as rx:
        outcomes = run(send_headers(url, "files-unsafe", source, headers))
    for name, outcome in zip(names, outcomes, strict=True):
        assert isinstance(outcome, UnsafeName), (name, outcome)
        assert outcome.exit_code == 4
        assert "unsafe file name" in str(outcome)
    assert listing(inbox) == []
    assert listing(tmp_path) == ["inbox", "payload.bin"]
    assert rx.finished is not None and rx.finished.returncode == 130  # still serving


def test_existing_file_is_refused_without_overwrite(url: str, tmp_path: Path) -> None:
    """An existing file is kept and the sender exits 5 with one clear line; the
    receiver says why once (not again as a warning of the failed call)."""
    inbox, source = tmp_path / "inbox", tmp_path / "report.txt"
    inbox.mkdir()
    (inbox / "report.txt").write_text("the original\n")
    source.write_text("a new version\n")
    with answer_peer(url, "files-exists", "--accept-files", str(inbox)) as rx:
        sent = send(url, "files-exists", source)
        assert rx.proc.poll() is None, "a refused file must not end the answer peer"
    assert sent.returncode == 5, sent.stderr
    assert last_line(sent) == (
        "rtc-peer: error: 'report.txt' refused by the receiver: the file exists already "
        "(the receiver may use --overwrite) (exists)"
    )
    assert "Traceback" not in sent.stderr
    assert (inbox / "report.txt").read_text() == "the original\n"
    assert listing(inbox) == ["report.txt"]
    assert rx.finished is not None
    assert rx.finished.stderr.count("the file exists already") == 1, rx.finished.stderr
    assert "rtc-peer: refused 'report.txt': the file exists already" in rx.finished.stderr


def test_existing_file_is_replaced_with_overwrite(url: str, tmp_path: Path) -> None:
    """With --overwrite the existing file is replaced by the one sent."""
    inbox, source = tmp_path / "inbox", tmp_path / "report.txt"
    inbox.mkdir()
    (inbox / "report.txt").write_text("the original\n")
    source.write_text("a new version\n")
    with answer_peer(url, "files-overwrite", "--accept-files", str(inbox), "--overwrite"):
        sent = send(url, "files-overwrite", source)
    assert sent.returncode == 0, sent.stderr
    assert (inbox / "report.txt").read_text() == "a new version\n"
    assert listing(inbox) == ["report.txt"]


def test_peer_without_accept_files_refuses_with_a_clear_error(url: str, tmp_path: Path) -> None:
    """Without --accept-files the answer peer refuses: the sender exits 3 with one clear line."""
    source = tmp_path / "hello.txt"
    source.write_text("hello\n")
    with answer_peer(url, "files-closed") as rx:
        sent = send(url, "files-closed", source)
        assert rx.proc.poll() is None
    assert sent.returncode == 3, sent.stderr
    assert last_line(sent) == (
        "rtc-peer: error: refused by the peer: this peer does not accept files "
        "(--accept-files) (not-accepting)"
    )
    assert rx.finished is not None and rx.finished.returncode == 130


def test_progress_bar_shows_rate_and_eta(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal: one redrawn line with percent, rate and ETA, ending with
    time and rate; sizes and rates in the same binary units (MiB, MiB/s)."""
    monkeypatch.setenv("COLUMNS", "100")
    header = FileHeader("movie.mkv", 10_000_000, "0" * 64)
    lines: list[str] = []
    screen = io.StringIO()
    meter = Progress("sent", header, True, lines.append, screen)
    meter.REFRESH = meter.WARM_UP = 0.0  # draw every update, with a rate at once
    meter.advance(2_500_000)
    stats = meter.finish()
    first, final = screen.getvalue().split("\r")[1:]
    assert first.startswith("sent movie.mkv [") and "]  25% 2.4 MiB/9.5 MiB " in first
    assert " MiB/s ETA " in first and len(first) == 99
    assert final.startswith("sent movie.mkv [") and "] 100% 9.5 MiB in " in final
    assert final.rstrip().endswith(" MiB/s") and final.endswith("\n")
    assert " MB/s" not in screen.getvalue()
    assert lines == [] and stats.size == 10_000_000
