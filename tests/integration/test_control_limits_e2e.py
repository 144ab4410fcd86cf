"""Control-channel limits end to end: `rtc-peer offer --control` against a
plain `rtc-peer answer` as real processes on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

from rtc_signal.proto.control import MAX_DEPTH
from tests.integration.test_media import control_plain_peer


def test_deeply_nested_and_oversized_requests_get_error_replies_and_the_call_goes_on(
    tmp_path: Path,
) -> None:
    """A 1,500-deep request (under 4096 bytes) and a 30,000-deep one (60 kB) each
    get an ok:false reply; a following ping on the same channel is answered."""
    deep = '{"cmd": "ping", "id": 5, "t": 1, "x": ' + "[" * 1500 + "]" * 1500 + "}"
    huge = '{"x": ' + "[" * 30_000 + "]" * 30_000 + "}"  # under the 64 KiB message size
    replies, plain, alive = control_plain_peer(tmp_path, deep, huge, "ping")
    assert alive, plain.stderr()
    nested, too_long, ping = replies
    assert nested["ok"] is False and nested["id"] is None
    assert f"deeper than {MAX_DEPTH} levels" in nested["error"]
    assert too_long["ok"] is False and "too long" in too_long["error"]
    assert ping["ok"] is True and ping["id"] == 3 and ping["cmd"] == "ping"
    assert "Traceback" not in plain.stderr() and "internal error" not in plain.stderr()
