"""The file receiver's name and free-space refusals end to end: `rtc-peer send`
and `rtc-peer answer --accept-files` as real processes over a real
`rtc-signal serve` on 127.0.0.1 (names the CLI will not send go through the
library-level sender of tests/integration/test_files.py, to a real answer peer)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from rtc_signal.peers.files import (
    FileHeader,
    FileStats,
    TransferIOError,
    UnsafeName,
    describe_file,
)
from tests.conftest import run
from tests.integration.procs import server
from tests.integration.test_files import answer_peer, last_line, listing, send, send_headers


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    """One signaling server for the module (each test registers its own IDs)."""
    with server() as signal_url:
        yield signal_url


def test_send_of_a_dotfile_fails_clearly_and_the_next_file_still_arrives(
    url: str, tmp_path: Path
) -> None:
    """`send .bashrc` exits 4 with one clear line, writes nothing; a plain file then arrives."""
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    outbox.mkdir()
    (outbox / ".bashrc").write_text("alias ls='rm -rf ~'\n")
    (outbox / "notes.txt").write_text("hello\n")
    with answer_peer(url, "files-dotfile", "--accept-files", str(inbox)) as rx:
        refused = send(url, "files-dotfile", outbox / ".bashrc")
        assert listing(inbox) == []
        sent = send(url, "files-dotfile", outbox / "notes.txt")
        assert rx.proc.poll() is None, "the answer peer must go on serving"
    assert refused.returncode == 4, refused.stderr
    assert ".bashrc" in last_line(refused) and "starting with '.'" in last_line(refused)
    assert last_line(refused).startswith("rtc-peer: error: ")
    assert "Traceback" not in refused.stderr
    assert sent.returncode == 0, sent.stderr
    assert listing(inbox) == ["notes.txt"]
    assert (inbox / "notes.txt").read_text() == "hello\n"


def test_receiver_refuses_hidden_temporary_and_invisible_names(url: str, tmp_path: Path) -> None:
    """Dot, temp-shaped, bidi-override and zero-width names are refused on the
    receiver, the reason reaching both sides; nothing is written; a plain name then arrives."""
    inbox, source = tmp_path / "inbox", tmp_path / "payload.bin"
    inbox.mkdir()
    source.write_bytes(b"not for you")
    right = run(describe_file(source))
    bad = {
        ".bashrc": "starting with '.'",
        ".payload.bin.part-0123abcd": "temporary files",
        "invoice\u202efdp.exe": "U+202E",
        "zero\u200bwidth.txt": "U+200B",
        "isolate\u2066.txt": "U+2066",
    }
    headers = [FileHeader(name, right.size, right.sha256) for name in bad]
    headers.append(right)
    with answer_peer(url, "files-names", "--accept-files", str(inbox)) as rx:
        outcomes = run(send_headers(url, "files-names", source, headers))
        assert rx.proc.poll() is None, "refused names must not end the answer peer"
    for (name, words), outcome in zip(bad.items(), outcomes[:-1], strict=True):
        assert isinstance(outcome, UnsafeName), (name, outcome)
        assert outcome.exit_code == 4
        assert "unsafe file name" in str(outcome) and words in str(outcome), outcome
    assert isinstance(outcomes[-1], FileStats)
    assert listing(inbox) == ["payload.bin"]
    assert rx.finished is not None
    for name in bad:  # the receiver logs the same refusal, the name escaped
        assert f"refused {name!r}: unsafe file name:" in rx.finished.stderr
    assert "\u202e" not in rx.finished.stderr and "\u200b" not in rx.finished.stderr


def test_file_larger_than_the_free_space_is_refused_before_any_data(
    url: str, tmp_path: Path
) -> None:
    """A header larger than DIR's free space: io-error (exit 8) before ready, nothing written."""
    inbox, source = tmp_path / "inbox", tmp_path / "huge.iso"
    inbox.mkdir()
    source.write_bytes(b"only the header is big")
    right = run(describe_file(source))
    huge = FileHeader(right.name, shutil.disk_usage(inbox).free + (1 << 30), right.sha256)
    with answer_peer(url, "files-space", "--accept-files", str(inbox)) as rx:
        outcomes = run(send_headers(url, "files-space", source, [huge, right]))
        assert rx.proc.poll() is None
    refused, stored = outcomes
    assert isinstance(refused, TransferIOError), refused
    assert refused.exit_code == 8
    assert "'huge.iso' refused by the receiver: not enough free space" in str(refused)
    assert isinstance(stored, FileStats)
    assert listing(inbox) == ["huge.iso"] and (inbox / "huge.iso").read_bytes() == (
        b"only the header is big"
    )
    assert rx.finished is not None and "not enough free space" in rx.finished.stderr
