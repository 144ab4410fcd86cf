"""rtc_signal.peers.media.sources: the reader thread of one input, without any network."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from rtc_signal.peers.media.sources import Item, Kind, MediaInput, Mode, parse_source
from rtc_signal.peers.media.testclip import make_clip


class Collector:
    def __init__(self) -> None:
        self.items: list[tuple[Kind, Item]] = []
        self.ended: list[BaseException | None] = []
        self.changed = threading.Condition()

    def publish(self, kind: Kind, item: Item) -> None:
        with self.changed:
            self.items.append((kind, item))
            self.changed.notify_all()

    def end(self, error: BaseException | None) -> None:
        self.ended.append(error)

    def wait_for(self, count: int, timeout: float = 10) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.items) >= count, timeout), len(self.items)


def test_testsrc_is_encoded_once_and_makes_a_keyframe_on_request() -> None:
    """The shared encoder's GOP is 2 s; a request makes the next picture an IDR."""
    media = MediaInput(parse_source("testsrc:160x120@30", "video"), ("video",), False)
    assert media.streams["video"].mode is Mode.ENCODE_ONCE and media.can_keyframe
    got = Collector()
    media.start(got.publish, got.end)
    try:
        got.wait_for(10)
        assert media.request_keyframe() is True
        requested_at = len(got.items)
        got.wait_for(requested_at + 5)
    finally:
        media.close()
    keys = [i for i, (_, item) in enumerate(got.items) if item.keyframe]
    assert keys[0] == 0
    # x264 may hold a frame or two in flight: the IDR comes within a few pictures
    assert any(requested_at - 2 <= k <= requested_at + 4 for k in keys[1:]), (keys, requested_at)
    assert len(keys) == 2  # no scheduled keyframe in this first second


def test_file_loops_with_increasing_timestamps(tmp_path: Path) -> None:
    """A file stands for a camera: at its end it plays again, timestamps going
    on, paced in real time."""
    clip = make_clip(tmp_path / "short.ts", seconds=0.2, width=160, height=120)
    media = MediaInput(parse_source(str(clip), "video"), ("video",), False)
    got = Collector()
    started = time.monotonic()
    media.start(got.publish, got.end)
    try:
        got.wait_for(15)
    finally:
        media.close()
    elapsed = time.monotonic() - started
    pts = [item.payload.pts for _, item in got.items]
    assert pts == sorted(pts) and len(set(pts)) == len(pts)
    assert elapsed >= 14 / 30 - 0.05  # paced: 15 frames of 30 fps take ~0.47 s
    assert got.ended == []


def test_passthrough_file_cannot_make_keyframes(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "c.ts", seconds=0.2, width=160, height=120)
    media = MediaInput(parse_source(str(clip), "video"), ("video",), False)
    try:
        assert media.streams["video"].mode is Mode.PASSTHROUGH
        assert media.request_keyframe() is False
    finally:
        media.close()
