"""One clock for all the tracks of a recording (pure, no I/O).

Each track's RTP timestamps count from their own random origin in their own
clock (90 kHz video, 48 kHz Opus), so they say nothing about how audio and
video line up. Senders relate them through RTCP sender reports (NTP time <->
RTP time), but aiortc's reports give the time a packet was *sent*, which is
no better than its arrival on loopback and LANs (and reports come only every
0.5-1.5 s). So a recording maps each track through the moment its media
arrived, ``seconds(ts) = offset + ts / clock_rate`` on the local monotonic
clock, shared by all tracks. Network delay differing between tracks (not
the case on one path) would show up as skew.

Two things make a frame's release time a poor arrival time, so each track's
mapping is the *least delayed* one seen over the first ``SETTLE`` seconds
(the minimum of arrival - media time: delays only ever add), and frames are
held until it is fixed:

- aiortc's jitter buffer releases a frame only when the first packet of a
  later frame arrives, ``RELEASE_LAG`` frames later (aiortc 1.16: video at
  the next frame, audio with ``prefetch=4``: 80 ms of 20 ms Opus packets):
  the release of frame ``i`` is the arrival of frame ``i + RELEASE_LAG``.
- A sender may start with a backlog (``rtc-peer answer`` queues up to ~1 s
  while the call is set up, then sends it in a burst): those frames arrive
  late, by a different amount per track.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Generic, TypeVar

#: frames a track's jitter buffer holds back: a frame is released when the
#: first packet of the frame this many later arrives (aiortc 1.16's
#: RTCRtpReceiver: JitterBuffer(prefetch=4) for audio, prefetch=0 for video)
RELEASE_LAG = {"video": 1, "audio": 4}
#: how long (seconds of arrival) the mappings are refined before frames go out
SETTLE = 2.0

Item = TypeVar("Item")


@dataclass
class _Track(Generic[Item]):
    clock_rate: int
    lag: int
    held: list[tuple[Item, int]] = field(default_factory=list)
    #: release times of the last `lag` frames (the arrival of the next ones)
    releases: collections.deque[float] = field(default_factory=collections.deque)
    offset: float | None = None  #: least (arrival - timestamp / clock_rate) seen
    fixed: bool = False


class Timeline(Generic[Item]):
    """Place frames of several tracks on one clock, in seconds.

    :meth:`add` takes a frame (any object, carried along), its RTP timestamp
    (unwrapped, as aiortc's receiver gives it), its track's clock rate and the
    monotonic time it was released; it returns the frames whose time is now
    known, each with its kind and time: nothing for the first ``settle``
    seconds, then all held frames in time order, then each frame as it comes.
    :meth:`flush` gives out what is still held (the call ended early).
    """

    def __init__(self, lag: dict[str, int] | None = None, settle: float = SETTLE) -> None:
        self._lag = RELEASE_LAG if lag is None else lag
        self._settle = settle
        self._tracks: dict[str, _Track[Item]] = {}
        self._first: float | None = None

    def add(
        self, kind: str, item: Item, timestamp: int, clock_rate: int, released: float
    ) -> list[tuple[str, Item, float]]:
        track = self._tracks.get(kind)
        if track is None:
            track = self._tracks[kind] = _Track(clock_rate, self._lag.get(kind, 0))
        if self._first is None:
            self._first = released
        if track.fixed:
            return [(kind, item, self._seconds(track, timestamp))]
        track.releases.append(released)
        if len(track.releases) > track.lag:
            # this frame arrived when the one `lag` before it was released
            sample = track.releases.popleft() - timestamp / track.clock_rate
            track.offset = sample if track.offset is None else min(track.offset, sample)
        track.held.append((item, timestamp))
        if released - self._first < self._settle:
            return []
        return self._release(fix=False)

    def flush(self) -> list[tuple[str, Item, float]]:
        return self._release(fix=True)

    def _release(self, fix: bool) -> list[tuple[str, Item, float]]:
        ready: list[tuple[str, Item, float]] = []
        for kind, track in self._tracks.items():
            if track.fixed or not track.held:
                continue
            if track.offset is None:
                if not fix:
                    continue  # too few frames yet to know when one arrived
                # the best guess there is: the last release, for the newest frame
                track.offset = track.releases[-1] - track.held[-1][1] / track.clock_rate
            track.fixed = True
            ready += [(kind, i, self._seconds(track, ts)) for i, ts in track.held]
            track.held.clear()
        ready.sort(key=lambda entry: entry[2])
        return ready

    @staticmethod
    def _seconds(track: _Track[Item], timestamp: int) -> float:
        assert track.offset is not None
        return track.offset + timestamp / track.clock_rate
