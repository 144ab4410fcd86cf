"""The file receiver's name rules (:func:`unsafe_name`) and its free-space check."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from rtc_signal.peers.file_receiver import _check_free_space
from rtc_signal.peers.files import FREE_SPACE_MARGIN, FileStats, TransferIOError, unsafe_name


@pytest.mark.parametrize(
    "name",
    [
        "report.pdf",
        "Ünïcödé name.txt",
        "U\u0308nicode decomposed.txt",  # combining marks (Mn) are ordinary text
        "日本語のファイル.txt",
        "résumé final (2).docx",
        "🎉 party.png",
        "no-extension",
        "trailing.dot.",
        "report.part-0123abcd",  # a temporary file's shape needs the leading dot
        "x" * 255,
        "é" * 127,  # 254 bytes
    ],
)
def test_ordinary_names_are_accepted(name: str) -> None:
    """Plain visible names, non-ASCII included, up to 255 bytes pass."""
    assert unsafe_name(name) is None


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("", "not a file name"),
        (".", "not a file name"),
        ("..", "not a file name"),
        ("../escaped", "path separator"),
        ("/etc/passwd", "path separator"),
        ("sub/dir.bin", "path separator"),
        ("back\\slash.bin", "path separator"),
        ("nul\0byte.bin", "NUL"),
        ("x" * 256, "longer than 255 bytes"),
        ("é" * 128, "longer than 255 bytes"),
        ("bad\ud800surrogate", "not valid Unicode"),
    ],
)
def test_names_that_leave_the_directory_are_refused(name: str, words: str) -> None:
    """Empty, '.', '..', separators, NUL, over 255 bytes, lone surrogates are refused."""
    reason = unsafe_name(name)
    assert reason is not None and words in reason, reason


@pytest.mark.parametrize("name", [".bashrc", ".ssh", ".hidden.txt", "...", ". space"])
def test_hidden_names_are_refused(name: str) -> None:
    """A name starting with '.' (a hidden file such as .bashrc) is refused."""
    reason = unsafe_name(name)
    assert reason is not None and "starting with '.'" in reason, reason


@pytest.mark.parametrize(
    "name",
    [
        ".report.pdf.part-0123abcd",
        ".x.part-deadbeef",
        ".a\u00e9b.part-00000000",
    ],
)
def test_names_shaped_like_temporary_files_are_refused(name: str) -> None:
    """'.NAME.part-XXXXXXXX' (the receiver's own temporary files) is refused, saying so."""
    reason = unsafe_name(name)
    assert reason is not None and "temporary files" in reason, reason


@pytest.mark.parametrize(
    "char",
    [
        "\n",
        "\r",
        "\t",
        "\x1b",  # ESC: terminal escape sequences
        "\x7f",
        "\x85",  # NEL (C1)
        "\u200b",  # zero-width space
        "\u200c",  # zero-width non-joiner
        "\u200d",  # zero-width joiner
        "\u2060",  # word joiner
        "\ufeff",  # zero-width no-break space (BOM)
        "\u00ad",  # soft hyphen
        "\u200e",  # left-to-right mark
        "\u200f",  # right-to-left mark
        "\u061c",  # Arabic letter mark
        "\u202a",
        "\u202b",
        "\u202c",
        "\u202d",
        "\u202e",  # right-to-left override: "invoice\u202efdp.exe" shows as "invoiceexe.pdf"
        "\u2066",
        "\u2067",
        "\u2068",
        "\u2069",
        "\u2028",  # line separator
        "\u2029",  # paragraph separator
    ],
)
def test_control_and_invisible_format_characters_are_refused(char: str) -> None:
    """Cc and Cf characters (controls, bidi overrides/isolates/marks, zero-width) are refused."""
    reason = unsafe_name(f"invoice{char}fdp.exe")
    assert reason is not None and f"U+{ord(char):04X}" in reason, reason


def test_free_space_check_refuses_a_file_larger_than_the_free_space(tmp_path: Path) -> None:
    """A declared size over the directory's free space is refused (io-error) with the figures."""
    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(TransferIOError) as caught:
        _check_free_space(tmp_path, free + 1)
    assert caught.value.code == "io-error" and caught.value.exit_code == 8
    assert "not enough free space" in str(caught.value)
    assert f"{free + 1} bytes" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_free_space_check_keeps_a_margin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file leaving less than FREE_SPACE_MARGIN free is refused; one leaving it passes."""
    free = 10 * FREE_SPACE_MARGIN
    usage = SimpleNamespace(total=2 * free, used=free, free=free)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage)
    with pytest.raises(TransferIOError, match="not enough free space"):
        _check_free_space(tmp_path, free - FREE_SPACE_MARGIN + 1)
    _check_free_space(tmp_path, free - FREE_SPACE_MARGIN)  # does not raise


def test_free_space_check_of_a_missing_directory_is_an_io_error(tmp_path: Path) -> None:
    """A directory that went away is an io-error refusal, not a crash."""
    with pytest.raises(TransferIOError, match="cannot check the free space"):
        _check_free_space(tmp_path / "gone", 1)


def test_summary_rate_is_in_mib_per_s_like_the_sizes() -> None:
    """The per-file summary gives its rate in MiB/s (2^20 bytes), the binary
    unit the sizes use, not MB/s."""
    stats = FileStats("movie.mkv", 10 * 1024 * 1024, 2.0)
    assert stats.summary("sent") == "sent movie.mkv (10485760 bytes) in 2.00 s, 5.0 MiB/s"
    assert stats.mib_per_s == 5.0
