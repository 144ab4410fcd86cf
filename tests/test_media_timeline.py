"""The recording clock (peers.media.timeline): frames released by aiortc's
real jitter buffer, late by different amounts per track, land at the time
their media arrived, so audio and video captured together line up."""

from __future__ import annotations

import inspect

from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtp import RtpPacket

from rtc_signal.peers.media.timeline import RELEASE_LAG, Timeline


def released_by_aiortc(
    buffer: JitterBuffer, frames: int, packets_per_frame: int, ticks: int, seconds: float
) -> tuple[dict[int, float], list[tuple[int, float]]]:
    """Feed ``frames`` frames through ``buffer`` (``packets_per_frame`` RTP
    packets, all of a frame at once, one frame every ``seconds``; RTP
    timestamps from an odd origin): when each frame arrived (by timestamp),
    and what the buffer released: (timestamp, time of the packet that released it)."""
    arrived: dict[int, float] = {}
    released: list[tuple[int, float]] = []
    sequence = 65530  # wraps, as real sequence numbers do
    for index in range(frames):
        timestamp = 123_456 + index * ticks
        now = 7.0 + index * seconds
        arrived[timestamp] = now
        for _ in range(packets_per_frame):
            packet = RtpPacket(payload_type=96, sequence_number=sequence, timestamp=timestamp)
            packet._data = b"x"  # type: ignore[attr-defined]  # what depayloading sets
            sequence = (sequence + 1) % 65536
            _, frame = buffer.add(packet)
            if frame is not None:
                released.append((frame.timestamp, now))
    return arrived, released


def test_release_lag_matches_the_jitter_buffers_aiortc_builds() -> None:
    """RTCRtpReceiver still builds its buffers as RELEASE_LAG assumes
    (audio prefetch=4, video prefetch 0): a change in aiortc fails here."""
    source = inspect.getsource(RTCRtpReceiver.__init__)
    assert "JitterBuffer(capacity=16, prefetch=4)" in source
    assert "JitterBuffer(capacity=512, is_video=True)" in source
    assert RELEASE_LAG == {"video": 1, "audio": 4}


def test_frames_are_placed_at_their_arrival_not_their_release() -> None:
    """Audio (20 ms packets, released 80 ms late) and video (30 fps, 3
    packets a frame, released a frame late) through aiortc's own jitter
    buffers: each frame's time on the timeline is when it arrived."""
    tracks = {
        "audio": (JitterBuffer(capacity=16, prefetch=4), 1, 960, 48000, 0.020),
        "video": (JitterBuffer(capacity=512, is_video=True), 3, 3000, 90000, 1 / 30),
    }
    for kind, (buffer, packets, ticks, rate, seconds) in tracks.items():
        arrived, released = released_by_aiortc(buffer, 30, packets, ticks, seconds)
        assert released[0][1] > arrived[released[0][0]] + 0.03, "released late, as claimed"
        timeline: Timeline[int] = Timeline()
        placed = [
            item
            for timestamp, at in released
            for item in timeline.add(kind, timestamp, timestamp, rate, at)
        ]
        assert [ts for ts, _ in placed] == [ts for ts, _ in released], kind  # all, in order
        for timestamp, at in placed:
            assert abs(at - arrived[timestamp]) < 1e-9, (kind, timestamp)


def test_frames_wait_until_their_track_is_anchored() -> None:
    """Nothing comes out of a track before the frame RELEASE_LAG later is
    known; then the held frames come out together, and later ones one by one."""
    timeline: Timeline[str] = Timeline({"audio": 2})
    assert timeline.add("audio", "a0", 0, 48000, 1.0) == []
    assert timeline.add("audio", "a1", 960, 48000, 1.02) == []
    # a0 was released when a2 arrived: a2 is at 1.0, a0 40 ms before
    out = timeline.add("audio", "a2", 1920, 48000, 1.04)
    assert [(i, round(t, 6)) for i, t in out] == [("a0", 0.96), ("a1", 0.98), ("a2", 1.0)]
    assert timeline.add("audio", "a3", 2880, 48000, 1.06) == [("a3", 1.02)]
    # tracks are independent: another kind starts its own anchor
    assert timeline.add("video", "v0", 0, 90000, 1.5) == [("v0", 1.5)]
