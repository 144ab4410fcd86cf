"""Control-channel limits end to end: `rtc-peer offer --control` against a
plain `rtc-peer answer` as real processes on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

from rtc_signal.proto.control import MAX_DEPTH
from tests.integration.procs import server
from tests.integration.test_media import finish, plain_answer_peer, stop_camera, viewer


def test_deeply_nested_and_oversized_requests_get_error_replies_and_the_call_goes_on(
    tmp_path: Path,
) -> None:
    """A 1,500-deep request (under 4096 bytes) and a 30,000-deep one (60 kB) each
    get an ok:false reply; a following ping on the same channel is answered."""
    deep = '{"cmd": "ping", "id": 5, "t": 1, "x": ' + "[" * 1500 + "]" * 1500 + "}"
    huge = '{"x": ' + "[" * 30_000 + "]" * 30_000 + "}"  # under the 64 KiB message size
    with server() as url:
        plain = plain_answer_peer(tmp_path, url)
        try:
            ctl = viewer(
                tmp_path,
                url,
                "ctl",
                "--control",
                deep,
                "--control",
                huge,
                "--control",
                "ping",
                target="plain",
            )
            finish(ctl)
            assert plain.proc.poll() is None, plain.stderr()
        finally:
            stop_camera(plain)
    nested, too_long, ping = [json.loads(line) for line in ctl.stdout().decode().splitlines()]
    assert nested["ok"] is False and nested["id"] is None
    assert f"deeper than {MAX_DEPTH} levels" in nested["error"]
    assert too_long["ok"] is False and "too long" in too_long["error"]
    assert ping["ok"] is True and ping["id"] == 3 and ping["cmd"] == "ping"
    assert "Traceback" not in plain.stderr() and "internal error" not in plain.stderr()
