"""Control protocol validation, SOURCE parsing and stats bookkeeping (pure parts)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rtc_signal.peers.media.h264 import MediaError
from rtc_signal.peers.media.sources import parse_source
from rtc_signal.peers.media.stats import StatsBook, format_line
from rtc_signal.proto.control import ControlError, Ping, Stats, error_reply, ok_reply, parse_request


def test_valid_requests_parse_to_their_types() -> None:
    """ping needs t (int or float); extra fields are ignored."""
    ping = parse_request('{"cmd": "ping", "id": 3, "t": 12.5, "extra": 1}')
    assert isinstance(ping, Ping) and ping.id == 3 and ping.t == 12.5
    assert isinstance(parse_request('{"cmd": "stats", "id": 0}'), Stats)


@pytest.mark.parametrize(
    ("message", "request_id", "words"),
    [
        (b'{"cmd": "ping"}', None, "binary"),
        ("{nope", None, "not JSON"),
        ("[1, 2]", None, "JSON object"),
        ('{"cmd": "ping", "t": 1}', None, '"id"'),
        ('{"cmd": "ping", "id": true, "t": 1}', None, '"id"'),
        ('{"cmd": "ping", "id": "4", "t": 1}', None, '"id"'),
        ('{"cmd": "reboot", "id": 5}', 5, "unknown command 'reboot'"),
        ('{"cmd": 7, "id": 5}', 5, '"cmd" must be a string'),
        ('{"cmd": "ping", "id": 6}', 6, "t"),
        ('{"cmd": "ping", "id": 6, "t": "soon"}', 6, "t"),
        ("x" * 5000, None, "too long"),
    ],
)
def test_malformed_requests_raise_control_error_with_the_id(
    message: str | bytes, request_id: int | None, words: str
) -> None:
    """Each malformed request gives a clear message and the id when usable."""
    with pytest.raises(ControlError) as caught:
        parse_request(message)
    assert caught.value.request_id == request_id
    assert words in str(caught.value)


def test_replies_have_the_documented_shape() -> None:
    assert json.loads(ok_reply(1, "pause", {"paused": True})) == {
        "id": 1,
        "ok": True,
        "cmd": "pause",
        "result": {"paused": True},
    }
    assert json.loads(error_reply(None, "bad")) == {"id": None, "ok": False, "error": "bad"}


def test_sources_are_recognised(tmp_path: Path) -> None:
    """testsrc sizes, rtsp URLs (over TCP), files; clear errors otherwise."""
    spec = parse_source("testsrc:1280x720@25", "video")
    assert spec.generated and spec.url == "testsrc2=size=1280x720:rate=25"
    assert parse_source("testsrc", "audio").url.startswith("sine=")
    rtsp = parse_source("rtsp://127.0.0.1:8554/cam", "video")
    assert rtsp.live and rtsp.options["rtsp_transport"] == "tcp"
    clip = tmp_path / "c.ts"
    clip.write_bytes(b"")
    assert parse_source(str(clip), "video").url == str(clip)
    with pytest.raises(MediaError, match="no such file"):
        parse_source(str(tmp_path / "missing.mp4"), "video")
    with pytest.raises(MediaError, match="unsupported URL"):
        parse_source("http://127.0.0.1/x", "video")


@dataclass
class _Stat:
    type: str
    bytesSent: int = 0
    packetsSent: int = 0
    packetsLost: int = 0
    roundTripTime: float | None = None


def _report(sent: int, packets: int, lost: int, rtt: float | None) -> dict[str, Any]:
    return {
        "out": _Stat("outbound-rtp", bytesSent=sent, packetsSent=packets),
        "remote": _Stat("remote-inbound-rtp", packetsLost=lost, roundTripTime=rtt),
    }


def test_stats_book_computes_rates_from_deltas() -> None:
    """kbps and packets/s are deltas over the sampling interval; totals add up."""
    now = [0.0]
    book = StatsBook(clock=lambda: now[0])
    book.add("a")
    book.add("b")
    book.update("a", [_report(0, 0, 0, None)], {})
    book.update("b", [_report(0, 0, 0, None)], {})
    now[0] = 2.0
    book.update("a", [_report(250_000, 200, 3, 0.004)], {"paused": False})
    book.update("b", [_report(125_000, 100, 0, 0.002)], {})
    a = book.viewer("a")
    assert a is not None
    assert (a["kbps"], a["packets_per_s"], a["packets_lost"], a["rtt_ms"]) == (
        1000.0,
        100.0,
        3,
        4.0,
    )
    total = book.total()
    assert (total["viewers"], total["kbps"], total["packets_per_s"], total["packets_lost"]) == (
        2,
        1500.0,
        150.0,
        3,
    )
    assert total["rtt_ms_max"] == 4.0 and total["rtt_ms_avg"] == 3.0
    assert "2 viewer(s), 1500 kbit/s" in format_line(book.snapshot())
    book.remove("a")
    assert book.viewer("a") is None and book.total()["viewers"] == 1
