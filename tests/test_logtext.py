"""signaling.logtext.clip: values from the network, bounded and escaped for log lines."""

from __future__ import annotations

import logging

import pytest

from rtc_signal.signaling.logtext import LIMIT, clip
from tests.conftest import run, running_server
from tests.httpclient import http_request


def test_short_strings_read_as_repr() -> None:
    """A plain value is shown as %r shows it (quoted), nothing cut."""
    assert clip("cam-1") == "'cam-1'"
    assert clip("") == "''"
    assert clip("it's") == '"it\'s"'


def test_long_strings_are_cut_with_the_count_of_what_was_cut() -> None:
    """Past 64 characters: the first 64, then …(+N) outside the quotes."""
    assert LIMIT == 64
    assert clip("x" * 64) == repr("x" * 64)
    assert clip("x" * 1000) == repr("x" * 64) + "…(+936)"
    assert clip("abcdef", limit=3) == "'abc'…(+3)"


@pytest.mark.parametrize(
    "value",
    [
        "line\nforged: entry",
        "cr\rlf",
        "\x1b[31mred\x1b[0m",  # ANSI escapes
        "admin\u202egpj.exe",  # right-to-left override
        "zero\u200bwidth",
        "line\u2028separator",
        "nul\x00del\x7f",
        "lone \udc80 surrogate",
    ],
)
def test_control_and_format_characters_are_escaped(value: str) -> None:
    """No newline, escape, bidi override or other non-printable character stays raw."""
    shown = clip(value)
    assert shown.isprintable() and shown.isascii()
    assert shown == repr(value)


def test_escaping_happens_after_cutting() -> None:
    """The limit counts the value's characters, so an escape is never cut in half."""
    shown = clip("\n" * 100)
    assert shown == repr("\n" * 64) + "…(+36)"


def test_non_str_values() -> None:
    """Bytes as a bytes literal (cut the same way), anything else as its str()."""
    assert clip(b"ab\n\xff") == "b'ab\\n\\xff'"
    assert clip(bytearray(b"z" * 70)) == repr(b"z" * 64) + "…(+6)"
    assert clip(None) == "'None'"
    assert clip(42) == "'42'"
    assert clip(ValueError("bad\nvalue")) == "'bad\\nvalue'"

    class Broken:
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert clip(Broken()) == "'<Broken>'"


def test_server_and_whep_log_lines_clip_what_clients_send(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A long peer ID with a newline and ANSI escape in a WHEP path, a long Origin:
    the log lines carry them cut to 64 characters and escaped."""
    caplog.set_level(logging.INFO)
    peer = "p" * 300 + "%0Aforged%1B[2J"
    origin = "https://" + "o" * 500

    async def main() -> None:
        async with running_server(allow_origins=("https://ok.example",)) as server:
            response = await http_request(server.url, "POST", f"/whep/{peer}", body=b"v=0\r\n")
            assert response.status == 415  # (no Content-Type)
            response = await http_request(
                server.url,
                "POST",
                f"/whep/{peer}",
                {"Content-Type": "application/sdp"},
                b"v=0\r\nm=video 9 X 96\r\n",
            )
            assert response.status == 404
            response = await http_request(server.url, "GET", "/register", {"Origin": origin})
            assert response.status == 403

    run(main())
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("rtc_signal")]
    whep = [line for line in lines if "no answer peer" in line]
    refused = [line for line in lines if "not allowed" in line]
    assert whep and refused
    for line in whep + refused:
        assert line.isprintable() and len(line) < 200, line
    assert "'" + "p" * 64 + "'…(+" in whep[0]
    assert "…(+" in refused[0] and "o" * 100 not in refused[0]
