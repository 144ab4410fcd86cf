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
        timeline: Timeline[int] = Timeline(settle=0.0)
        placed = [
            item
            for timestamp, at in released
            for item in timeline.add(kind, timestamp, timestamp, rate, at)
        ]
        assert [ts for _, ts, _ in placed] == [ts for ts, _ in released], kind  # all, in order
        for _, timestamp, at in placed:
            assert abs(at - arrived[timestamp]) < 1e-9, (kind, timestamp)


def test_a_late_burst_at_the_start_does_not_shift_a_track() -> None:
    """Audio and video captured together, each track's first frames sent
    late in a burst (by different amounts, as a sender's backlog is): once
    settled, frames captured at the same instant get the same time, and
    nothing comes out before that."""
    timeline: Timeline[str] = Timeline(lag={"audio": 0, "video": 0}, settle=1.0)
    out: list[tuple[str, str, float]] = []
    events: list[tuple[float, str, int, int]] = []  # (arrival, kind, timestamp, clock)
    for n in range(100):  # 2 s of 20 ms audio; the first 0.6 s arrive at 0.6 s
        capture = n * 0.020
        events.append((max(capture, 0.6) + 0.001, "audio", n * 960, 48000))
    for n in range(60):  # 2 s of 30 fps video; the first 0.3 s arrive at 0.3 s
        capture = n / 30
        events.append((max(capture, 0.3) + 0.001, "video", 5000 + n * 3000, 90000))
    for arrival, kind, timestamp, clock in sorted(events):
        placed = timeline.add(kind, f"{kind}@{timestamp}", timestamp, clock, arrival)
        assert not placed or arrival >= 1.0, "held until settled"
        out += placed
    times = {item: at for _, item, at in out}
    assert len(times) == 160
    for n in range(0, 60, 3):  # every 100 ms both tracks have a frame captured
        video, audio = times[f"video@{5000 + n * 3000}"], times[f"audio@{n // 3 * 5 * 960}"]
        assert abs(video - audio) < 1e-6, (n, video, audio)
    assert [at for _, _, at in out[:30]] == sorted(at for _, _, at in out[:30])


def test_flush_gives_out_what_is_held() -> None:
    """A call that ends before the timeline settled still gets its frames."""
    timeline: Timeline[str] = Timeline({"audio": 2}, settle=5.0)
    for n in range(4):
        assert timeline.add("audio", f"a{n}", n * 960, 48000, 1.0 + n * 0.02) == []
    # a2 arrived when a0 was released (1.0), a3 when a1 was (1.02)
    assert [(i, round(t, 6)) for _, i, t in timeline.flush()] == [
        ("a0", 0.96),
        ("a1", 0.98),
        ("a2", 1.0),
        ("a3", 1.02),
    ]
    assert timeline.flush() == []
