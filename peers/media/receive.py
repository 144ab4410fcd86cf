"""The viewer side: receive tracks without decoding them, record by remuxing.

aiortc's RTCRtpReceiver always decodes (a ``decoder_worker`` thread per
receiver) and has no API for the encoded frames. :func:`encoded_frames`
marks a receiver's track so that its worker forwards the reassembled,
depayloaded frames instead (Annex-B H.264 access units, VP8 frames, Opus
packets, with their RTP timestamps): no decoder is ever created for it.
The module-level ``decoder_worker`` is wrapped once (checked against aiortc
1.16's source) and behaves as before for every other receiver.

:class:`Recorder` writes those frames with PyAV's muxer (nothing is decoded
or re-encoded): MP4, MKV or MPEG-TS by the file's suffix, each holding the
video and the Opus audio, starting at the first keyframe, picture size read
from the SPS / VP8 key frame header, audio and video placed on one clock by
:mod:`peers.media.timeline`.
"""

from __future__ import annotations

import asyncio
import collections
import fractions
import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiortc.rtcrtpreceiver as _receiver_module
import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from rtc_signal.peers.media.h264 import (
    NAL_IDR,
    NAL_PPS,
    NAL_SPS,
    MediaError,
    nal_type,
    parse_sps,
    split_annexb,
    vp8_size,
)
from rtc_signal.peers.media.timeline import Timeline

log = logging.getLogger(__name__)

#: Opus in WebRTC: always a 48 kHz clock, stereo in the SDP (RFC 7587)
OPUS_RATE = 48000
#: audio kept while waiting for the first keyframe (1 s of 20 ms packets)
EARLY_AUDIO_FRAMES = 50


@dataclass(frozen=True)
class EncodedFrame:
    """One received frame, still encoded; ``timestamp`` in the codec's clock
    (90 kHz video, 48 kHz Opus), from 0 at the first packet (unwrapped);
    ``arrival``: when aiortc's jitter buffer released it (time.monotonic())."""

    mime: str
    data: bytes
    timestamp: int
    clock_rate: int
    arrival: float = 0.0


_passthrough: weakref.WeakSet[asyncio.Queue[Any]] = weakref.WeakSet()
_original_worker = _receiver_module.decoder_worker


def _worker(
    loop: asyncio.AbstractEventLoop,
    input_q: queue.Queue[Any],
    output_q: asyncio.Queue[Any],
    decode_error: threading.Event,
) -> None:
    if output_q not in _passthrough:
        _original_worker(loop, input_q, output_q, decode_error)
        return
    while True:
        task = input_q.get()
        if task is None:
            asyncio.run_coroutine_threadsafe(output_q.put(None), loop)
            return
        codec, frame = task
        encoded = EncodedFrame(
            codec.mimeType, bytes(frame.data), frame.timestamp, codec.clockRate, time.monotonic()
        )
        asyncio.run_coroutine_threadsafe(output_q.put(encoded), loop)


_receiver_module.decoder_worker = _worker


def encoded_frames(track: MediaStreamTrack) -> None:
    """Make a remote ``track`` yield :class:`EncodedFrame` s, never decoding.
    Call it from the peer connection's "track" event: its receiver's worker
    starts right after."""
    _passthrough.add(track._queue)  # type: ignore[attr-defined]  # a RemoteStreamTrack


class Recorder:
    """Remux received frames into a file (no decoding; see the module doc).

    Timestamps: each track goes through one :class:`Timeline` (the arrival
    clock shared by audio and video; it holds frames for its first
    ``SETTLE`` seconds), the file starts at its first video
    keyframe (or first audio frame, audio only) as 0, and each packet's pts is
    given in its RTP clock (1/90000, 1/48000) with that time base: PyAV
    rescales it to whatever time base the muxer chose (MKV 1/1000, MPEG-TS
    1/90000, MP4 the stream's). With ``seconds``, frames from that point on
    are left out, so the file holds exactly that much.
    """

    def __init__(
        self,
        path: Path,
        seconds: float | None = None,
        on_start: Callable[[float], None] | None = None,
    ) -> None:
        self.path = path
        self.seconds = seconds
        self.on_start = on_start
        self.container: Any = None
        self.streams: dict[str, Any] = {}
        self.origin: float | None = None  #: monotonic time of the file's 0
        self.frames: dict[str, int] = {"video": 0, "audio": 0}
        self.size: tuple[int, int] | None = None
        self.video_mime: str | None = None
        self._timeline: Timeline[EncodedFrame] = Timeline()
        self._last_pts: dict[str, int] = {}
        # audio released before the first keyframe may still belong after it
        # (audio waits longer in aiortc's jitter buffer than video)
        self._early_audio: collections.deque[tuple[EncodedFrame, float]] = collections.deque(
            maxlen=EARLY_AUDIO_FRAMES
        )
        self._expect_audio = False
        self._waiting_keyframe = True

    def expect(self, video: bool, audio: bool) -> None:
        self._expect_audio = audio
        if not video:
            self._waiting_keyframe = False

    def _open(self, first_video: EncodedFrame | None) -> None:
        try:
            self.container = av.open(str(self.path), "w")
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise MediaError(f"cannot write {self.path}: {exc}") from None
        if first_video is not None:
            codec = "h264" if first_video.mime.lower() == "video/h264" else "vp8"
            assert self.size is not None
            width, height = self.size
            # No extradata needed: the first packet starts with SPS/PPS, and the
            # MP4/MKV muxers build their avcC from it.
            stream = self.container.add_mux_stream(codec, width=width, height=height)
            stream.time_base = fractions.Fraction(1, first_video.clock_rate)
            self.streams["video"] = stream
        if self._expect_audio:
            # A stream with a (never fed) libopus encoder rather than a bare
            # mux stream: opening it fills in what the muxers need and PyAV
            # cannot set on a mux stream: the channel count (MPEG-TS) and the
            # OpusHead extradata (MP4's dOps box). Its pre-skip of 312 samples
            # makes players drop the first 6.5 ms of the recording's audio.
            stream = self.container.add_stream("libopus", rate=OPUS_RATE, layout="stereo")
            self.streams["audio"] = stream

    def write(self, kind: str, frame: EncodedFrame) -> None:
        for ready_kind, item, seconds in self._timeline.add(
            kind, frame, frame.timestamp, frame.clock_rate, frame.arrival
        ):
            self._place(ready_kind, item, seconds)

    def _place(self, kind: str, frame: EncodedFrame, seconds: float) -> None:
        if self.container is None:
            if kind == "video":
                size = self._keyframe_size(frame)
                if size is None:
                    return  # nothing is decodable before a keyframe
                self.size = size
                self.video_mime = frame.mime
                self._open(frame)
            elif not self._waiting_keyframe:
                self._open(None)
            else:
                self._early_audio.append((frame, seconds))
                return
            self.origin = seconds
            if self.on_start is not None:
                self.on_start(seconds)
            early = list(self._early_audio)
            self._early_audio.clear()
            self._mux(kind, frame, seconds)
            for audio, at in early:
                self._mux("audio", audio, at)
            return
        self._mux(kind, frame, seconds)

    def _mux(self, kind: str, frame: EncodedFrame, seconds: float) -> None:
        stream = self.streams.get(kind)
        if stream is None or self.origin is None:
            return
        offset = seconds - self.origin
        if offset < 0 or (self.seconds is not None and offset >= self.seconds):
            return  # before the first keyframe, or past the asked length
        pts = round(offset * frame.clock_rate)
        if pts <= self._last_pts.get(kind, -1):
            return  # a repeated or reordered frame: timestamps must increase
        self._last_pts[kind] = pts
        packet = av.Packet(frame.data)
        packet.stream = stream
        packet.time_base = fractions.Fraction(1, frame.clock_rate)
        packet.pts = packet.dts = pts
        if kind == "video" and self._is_keyframe(frame):
            packet.is_keyframe = True
        try:
            self.container.mux(packet)
        except av.FFmpegError as exc:
            log.warning("could not write a %s frame: %s", kind, exc)
            return
        self.frames[kind] += 1

    @staticmethod
    def _is_keyframe(frame: EncodedFrame) -> bool:
        if frame.mime.lower() == "video/h264":
            return any(nal_type(u) == NAL_IDR for u in split_annexb(frame.data))
        return vp8_size(frame.data) is not None

    def _keyframe_size(self, frame: EncodedFrame) -> tuple[int, int] | None:
        if frame.mime.lower() == "video/h264":
            units = split_annexb(frame.data)
            kinds = [nal_type(u) for u in units]
            if NAL_IDR not in kinds or NAL_SPS not in kinds or NAL_PPS not in kinds:
                return None
            info = parse_sps(units[kinds.index(NAL_SPS)])
            return info.width, info.height
        if frame.mime.lower() == "video/vp8":
            return vp8_size(frame.data)
        raise MediaError(f"cannot record {frame.mime} without re-encoding")

    def close(self) -> None:
        for kind, item, seconds in self._timeline.flush():
            self._place(kind, item, seconds)
        if self.container is not None:
            container, self.container = self.container, None
            try:
                container.close()  # writes the trailer (MP4: the index)
            except av.FFmpegError as exc:
                raise MediaError(f"could not finish {self.path}: {exc}") from None


async def pump(track: Any, kind: str, sink: Recorder | None, counts: dict[str, int]) -> None:
    """Read ``track`` until it ends, counting frames and writing them to ``sink``."""
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        counts[kind] = counts.get(kind, 0) + 1
        if sink is not None:
            sink.write(kind, frame)
