"""One clock for all the tracks of a recording (pure, no I/O).

Each track's RTP timestamps count from their own random origin in their own
clock (90 kHz video, 48 kHz Opus), so they say nothing about how audio and
video line up. Senders relate them through RTCP sender reports (NTP time <->
RTP time); on loopback and LANs the arrival time says the same with less
machinery, so a recording maps each track through the moment its media
arrived: ``seconds(ts) = arrival(anchor) + (ts - anchor_ts) / clock_rate``,
on the local monotonic clock, shared by all tracks. Network delay differing
between tracks (not the case on one path) would show up as skew: use RTCP
sender reports if that ever matters.

The arrival of a frame is not the moment aiortc hands it over: its jitter
buffer releases a frame only when the first packet of a later frame
arrives, ``RELEASE_LAG`` frames later (aiortc 1.16: video at the next frame,
audio with ``prefetch=4``: 80 ms of 20 ms Opus packets). Taken at face value
that would put audio ~50 ms behind video. So when a track's first frame is
released at ``t``, it is the frame ``RELEASE_LAG`` later that arrived at
``t``: :class:`Timeline` holds each track's first ``RELEASE_LAG + 1`` frames
until it knows that frame's timestamp, then anchors the track there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

#: frames a track's jitter buffer holds back: a frame is released when the
#: first packet of the frame this many later arrives (aiortc 1.16's
#: RTCRtpReceiver: JitterBuffer(prefetch=4) for audio, prefetch=0 for video)
RELEASE_LAG = {"video": 1, "audio": 4}

Item = TypeVar("Item")


@dataclass
class _Track(Generic[Item]):
    clock_rate: int
    lag: int
    pending: list[tuple[Item, int, float]] = field(default_factory=list)
    anchor_ts: int = 0
    anchor_seconds: float = 0.0
    anchored: bool = False


class Timeline(Generic[Item]):
    """Place frames of several tracks on one clock, in seconds.

    :meth:`add` takes a frame (any object, carried along), its RTP timestamp
    (unwrapped, as aiortc's receiver gives it), its track's clock rate and the
    monotonic time it was released; it returns the frames whose time is now
    known, in order, each with that time.
    """

    def __init__(self, lag: dict[str, int] | None = None) -> None:
        self._lag = RELEASE_LAG if lag is None else lag
        self._tracks: dict[str, _Track[Item]] = {}

    def add(
        self, kind: str, item: Item, timestamp: int, clock_rate: int, released: float
    ) -> list[tuple[Item, float]]:
        track = self._tracks.get(kind)
        if track is None:
            track = self._tracks[kind] = _Track(clock_rate, self._lag.get(kind, 0))
        if track.anchored:
            return [(item, self._seconds(track, timestamp))]
        track.pending.append((item, timestamp, released))
        if len(track.pending) <= track.lag:
            return []
        # the frame `lag` after the first arrived when the first was released
        _, track.anchor_ts, _ = track.pending[-1]
        track.anchor_seconds = track.pending[0][2]
        track.anchored = True
        ready = [(i, self._seconds(track, ts)) for i, ts, _ in track.pending]
        track.pending.clear()
        return ready

    @staticmethod
    def _seconds(track: _Track[Item], timestamp: int) -> float:
        return track.anchor_seconds + (timestamp - track.anchor_ts) / track.clock_rate
