"""The page as a viewer of `rtc-peer answer --video` camera peers (issue 5's media)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rtc_signal.peers.media.testclip import make_clip
from tests.browser.test_page import VIDEO_PLAYING

CAMERA_ARGS = ["--host-address", "127.0.0.1"]


@pytest.fixture(scope="module")
def h264_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s of H.264 Baseline 640x360 in MPEG-TS (the camera loops it)."""
    return make_clip(tmp_path_factory.mktemp("clips") / "clip.ts", seconds=2.0)


def start_camera(procs: Any, server_url: str, name: str, source: str) -> Any:
    camera = procs(
        "rtc_signal.peers.cli",
        "answer",
        "--id",
        name,
        "--video",
        source,
        "--signal",
        server_url,
        *CAMERA_ARGS,
    )
    camera.wait_line(f"registered as '{name}'", "camera registration", stream="stderr")
    return camera


def wait_playing(page: Any, peer: str) -> tuple[int, int]:
    selector = f"video[data-peer='{peer}']"
    page.wait_for_function(VIDEO_PLAYING, arg=selector, timeout=20_000, polling=200)
    size = page.evaluate(
        "(s) => { const v = document.querySelector(s); return [v.videoWidth, v.videoHeight]; }",
        selector,
    )
    return int(size[0]), int(size[1])


def test_page_plays_a_passed_through_h264_camera(
    new_page: Any, page_url: Any, server_url: str, procs: Any, h264_clip: Path, artifacts: Path
) -> None:
    """?target=cam shows the camera's H.264 clip (passed through, not re-encoded)
    in a <video> that plays at the clip's size; negotiation chose H.264."""
    start_camera(procs, server_url, "cam", str(h264_clip))
    page = new_page(page_url("?target=cam"))
    assert wait_playing(page, "cam") == (640, 360)
    codecs = page.evaluate(
        """async () => {
            const s = window.rtcSignal.sessions.get('cam');
            const report = await s.pc.getStats();
            return Array.from(report.values()).filter(r => r.type === 'codec')
                .map(r => r.mimeType);
        }"""
    )
    assert "video/H264" in codecs, codecs
    page.screenshot(path=str(artifacts / "camera-viewer.png"), full_page=True)


def test_page_control_buttons_round_trip_with_a_camera(
    new_page: Any, page_url: Any, server_url: str, procs: Any, artifacts: Path
) -> None:
    """The Control buttons send ping/stats/keyframe/pause/resume on the `control`
    channel; each reply is shown readably (ping's RTT, paused/resumed, stats as
    a table), never as raw JSON."""
    start_camera(procs, server_url, "cam2", "testsrc")
    page = new_page(page_url("?target=cam2"))
    wait_playing(page, "cam2")
    for command in ("ping", "stats", "keyframe", "pause", "resume"):
        before = page.evaluate("window.rtcSignal.log.length")
        page.click(f"#controls button[data-cmd='{command}']")
        page.wait_for_function(
            "([n, cmd]) => window.rtcSignal.log.slice(n).some(e => e.reply && e.reply.cmd === cmd)",
            arg=[before, command],
            timeout=10_000,
        )
    replies = page.evaluate(
        "window.rtcSignal.log.filter(e => e.reply).map(e => [e.kind, e.text, e.reply.ok])"
    )
    assert [ok for _, _, ok in replies] == [True] * 5, replies
    texts = [text for _, text, _ in replies]
    assert texts[0].startswith("pong: RTT ") and texts[0].endswith(" ms"), texts
    # testsrc is encoded here: it can make a keyframe on request
    assert texts[1:] == ["stats:", "keyframe requested", "video paused", "video resumed"], texts
    table = page.locator("#log table.result")
    assert table.count() == 1
    assert table.locator("thead th").all_inner_texts()[1:] == ["this viewer", "all viewers"]
    assert "packets per s" in table.locator("tbody th").all_inner_texts()
    assert "{" not in page.inner_text("#log"), page.inner_text("#log")
    assert page.evaluate("window.rtcSignal.errors") == []
    page.screenshot(path=str(artifacts / "page-control-replies.png"), full_page=True)


def test_page_reports_a_malformed_control_reply_free_channel(
    new_page: Any, page_url: Any, server_url: str, procs: Any
) -> None:
    """A bad command typed through the page's API gets an error reply, and the
    camera keeps serving (the video goes on playing)."""
    start_camera(procs, server_url, "cam3", "testsrc")
    page = new_page(page_url("?target=cam3"))
    wait_playing(page, "cam3")
    reply = page.evaluate(
        "async () => window.rtcSignal.control(window.rtcSignal.sessions.get('cam3'), 'reboot')"
    )
    assert reply["ok"] is False and "reboot" in reply["error"]
    wait_playing(page, "cam3")
