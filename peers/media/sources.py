"""Media inputs: a file, an RTSP URL, a capture device or a generated pattern.

One :class:`MediaInput` per source, shared by every viewer: one demuxer (or
one generator and, for raw pictures, one encoder) in one reader thread,
publishing :class:`Item` s to the asyncio side (see :mod:`peers.media.relay`).

How each stream is sent (:class:`Mode`):

- ``passthrough``: H.264, VP8 and Opus go out as they come, packetized but
  never decoded; H.264 is normalized by :class:`~peers.media.h264.H264Normalizer`
  (Annex-B, SPS/PPS before each IDR, B-frames refused).
- ``encode-once``: raw pictures (``testsrc``, most webcams) are encoded once
  with libx264 (Baseline, no B-frames) and the packets shared, so viewers
  cost no more than with passthrough; keyframes can be requested.
- ``frames``: decoded pictures/samples given to each viewer's own aiortc
  encoder: ``--transcode``, and audio that is not Opus (encoding audio is
  cheap). Each viewer then costs an encoder (the benchmark's baseline).

Files and ``testsrc`` are paced in real time and files loop (a file stands
for a camera); live sources (RTSP, devices) are read as they arrive, and
reopened with backoff when they are lost (viewers keep their connection; the
video goes on at the next keyframe, timestamps continuing). A source that
cannot be opened at start-up is an error.
"""

from __future__ import annotations

import contextlib
import enum
import fractions
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import av

from rtc_signal.peers.media.h264 import BFramesError, H264Normalizer, MediaError, vp8_keyframe

log = logging.getLogger(__name__)

Kind = Literal["video", "audio"]

#: the codecs sent without decoding, by FFmpeg codec name -> RTP MIME type
PASSTHROUGH_CODECS = {"h264": "video/H264", "vp8": "video/VP8", "opus": "audio/opus"}
#: how long to wait for a network source to answer / deliver (seconds)
NETWORK_TIMEOUT = 10.0
#: packets read ahead to check a passthrough H.264 stream before serving it
PROBE_PACKETS = 90
#: a lost live source is reopened after this many seconds, doubling up to the max
RETRY_FIRST = 0.5
RETRY_MAX = 10.0

_TESTSRC = re.compile(r"^testsrc(?::(\d+)x(\d+)(?:@(\d+))?)?$")
_DEVICE = re.compile(r"^(v4l2|alsa|pulse):(.+)$")


class Mode(enum.Enum):
    PASSTHROUGH = "passthrough"
    ENCODE_ONCE = "encode-once"
    FRAMES = "frames"


@dataclass(frozen=True)
class SourceSpec:
    """Where a SOURCE argument points, and how PyAV opens it."""

    text: str
    url: str
    format: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    live: bool = False  #: RTSP or a device: no pacing, no looping
    generated: bool = False  #: testsrc: raw pictures made here


def parse_source(text: str, kind: Kind) -> SourceSpec:
    """Parse ``--video``/``--audio`` SOURCE; MediaError with what is accepted."""
    test = _TESTSRC.match(text)
    if test:
        if kind == "audio":
            return SourceSpec(text, "sine=frequency=440:sample_rate=48000", "lavfi", generated=True)
        width, height, fps = test.group(1) or "640", test.group(2) or "360", test.group(3) or "30"
        graph = f"testsrc2=size={width}x{height}:rate={fps}"
        return SourceSpec(text, graph, "lavfi", generated=True)
    if text.startswith(("rtsp://", "rtsps://")):
        options = {"rtsp_transport": "tcp", "timeout": str(int(NETWORK_TIMEOUT * 1e6))}
        return SourceSpec(text, text, None, options, live=True)
    device = _DEVICE.match(text)
    if device is None and text.startswith("/dev/video"):
        device = _DEVICE.match(f"v4l2:{text}")
    if device is not None:
        fmt = device.group(1)
        if fmt not in av.formats_available:
            raise MediaError(
                f"{text}: this FFmpeg build (PyAV {av.__version__}) has no {fmt!r} input; "
                f"available devices: {', '.join(sorted(_devices())) or 'none'}"
            )
        return SourceSpec(text, device.group(2), fmt, live=True)
    if "://" in text:
        raise MediaError(f"{text}: unsupported URL (rtsp:// and rtsps:// are)")
    if not Path(text).is_file():
        raise MediaError(
            f"{text}: no such file (SOURCE is a file, rtsp://..., v4l2:/dev/videoN, "
            "alsa:DEVICE, pulse:DEVICE or testsrc[:WxH[@FPS]])"
        )
    return SourceSpec(text, text)


def _devices() -> set[str]:
    return {name for name in ("v4l2", "alsa", "pulse") if name in av.formats_available}


@dataclass
class Item:
    """One unit handed to viewers: an encoded packet (passthrough, encode-once)
    or a decoded frame (frames mode). ``None`` payload: the source ended."""

    payload: av.Packet[Any] | av.VideoFrame | av.AudioFrame
    keyframe: bool


Publish = Callable[[Kind, Item], None]
Ended = Callable[[BaseException | None], None]


@dataclass
class StreamState:
    """One stream of an input and how it is sent."""

    kind: Kind
    stream: Any  # av stream
    mode: Mode
    #: RTP MIME type of what viewers get ("video/H264"...), None: any (frames)
    mime: str | None
    codec_name: str
    normalizer: H264Normalizer | None = None
    encoder: Any = None  # av.VideoCodecContext for encode-once
    resampler: Any = None  # av.AudioResampler for audio frames
    items: int = 0
    keyframes: int = 0
    last_pts: float = 0.0  #: seconds (output timeline) of the last item

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "kind": self.kind,
            "mode": self.mode.value,
            "input_codec": self.codec_name,
            "output": self.mime or "negotiated per viewer",
            "items": self.items,
            "keyframes": self.keyframes,
        }
        if self.normalizer is not None:
            info["sps_pps_injected"] = self.normalizer.injected
        return info


class MediaInput:
    """One opened source and its reader thread (started by the first viewer)."""

    def __init__(
        self,
        spec: SourceSpec,
        kinds: tuple[Kind, ...],
        transcode: bool,
        on_status: Callable[[str], None] | None = None,
    ) -> None:
        self.spec = spec
        self.kinds = kinds
        self.transcode = transcode
        self.on_status = on_status
        self.reconnects = 0
        #: video keyframes published to the viewers so far: the points where a
        #: viewer that is not reading yet restarts its audio too (peers.media.relay)
        self.keyframes_published = 0
        self._keyframe_wanted = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._probed: list[av.Packet[Any]] = []
        #: end of what was published so far (seconds on the output timeline)
        self._timeline_end = 0.0
        self.streams: dict[Kind, StreamState] = {}
        self._open()

    def _open(self) -> None:
        """Open the container and pick its streams (again, after a loss)."""
        try:
            self.container = av.open(
                self.spec.url,
                format=self.spec.format,
                options=self.spec.options,
                timeout=NETWORK_TIMEOUT if self.spec.live else None,
            )
        except (av.FFmpegError, OSError) as exc:
            raise MediaError(f"cannot open {self.spec.text}: {exc}") from None
        try:
            for kind in self.kinds:
                state = self._choose(kind)
                previous = self.streams.get(kind)
                if previous is None:
                    self.streams[kind] = state
                elif (previous.mode, previous.mime) != (state.mode, state.mime):
                    raise MediaError(
                        f"{self.spec.text}: the {kind} stream is now {state.codec_name}, "
                        f"not {previous.codec_name}"
                    )
                else:  # keep the counters, the encoder and the resampler
                    previous.stream, previous.normalizer = state.stream, state.normalizer
            self._probed = []
            self._probe()
        except BaseException:
            self.container.close()
            raise

    # -- set-up ------------------------------------------------------------------

    def _choose(self, kind: Kind) -> StreamState:
        streams = self.container.streams
        candidates: Any = streams.video if kind == "video" else streams.audio
        if not candidates:
            raise MediaError(f"{self.spec.text} has no {kind} stream")
        stream = candidates[0]
        name = stream.codec_context.name
        raw = self.spec.generated or name in ("rawvideo", "wrapped_avframe", "mjpeg")
        if name in PASSTHROUGH_CODECS and not self.transcode and not self.spec.generated:
            mode, mime = Mode.PASSTHROUGH, PASSTHROUGH_CODECS[name]
        elif kind == "audio" or self.transcode:
            mode, mime = Mode.FRAMES, None
        elif raw and (self.spec.generated or self.spec.live):
            mode, mime = Mode.ENCODE_ONCE, "video/H264"
        else:
            raise MediaError(
                f"{self.spec.text}: {name} video cannot be passed through (H.264 and VP8 "
                "can); use --transcode to decode and re-encode it"
            )
        state = StreamState(kind, stream, mode, mime, name)
        if mode is Mode.PASSTHROUGH and name == "h264":
            extradata = stream.codec_context.extradata
            state.normalizer = H264Normalizer(extradata, self.spec.text)
        if mode is not Mode.PASSTHROUGH:
            stream.codec_context.thread_type = "AUTO"
        log.info("%s: %s %s stream sent as %s", self.spec.text, name, kind, mode.value)
        return state

    def _probe(self) -> None:
        """Read ahead a little: a passthrough H.264 stream with B-frames (or
        broken data) is refused now, before any viewer is served."""
        video = self.streams.get("video")
        if video is None or video.normalizer is None:
            return
        probe = H264Normalizer(video.stream.codec_context.extradata, self.spec.text)
        keyframes = 0
        try:
            for packet in self.container.demux(*(s.stream for s in self.streams.values())):
                self._probed.append(packet)
                if packet.stream is video.stream and packet.size:
                    keyframes += probe.process(bytes(packet)).keyframe
                if keyframes >= 2 or len(self._probed) >= PROBE_PACKETS:
                    break
        except av.FFmpegError as exc:
            raise MediaError(f"cannot read {self.spec.text}: {exc}") from None

    @property
    def can_keyframe(self) -> bool:
        video = self.streams.get("video")
        return video is not None and video.mode is Mode.ENCODE_ONCE

    def request_keyframe(self) -> bool:
        """Ask the shared encoder for an IDR; False if this input has none."""
        if not self.can_keyframe:
            return False
        self._keyframe_wanted.set()
        return True

    # -- running -------------------------------------------------------------------

    def start(self, publish: Publish, ended: Ended) -> None:
        """Start the reader thread (idempotent). ``publish`` and ``ended`` are
        called from that thread: they must hand over to the event loop."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._run, args=(publish, ended), name=f"media-{self.spec.text}", daemon=True
        )
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("%s: reader thread still blocked; leaving it", self.spec.text)
                return
        self.container.close()

    def _run(self, publish: Publish, ended: Ended) -> None:
        delay = RETRY_FIRST
        resume_at: float | None = None
        while True:
            published = sum(s.items for s in self.streams.values())
            error: BaseException | None = None
            try:
                self._read(publish, resume_at)
            except MediaError as exc:
                error = exc
            except (av.FFmpegError, OSError) as exc:
                error = MediaError(f"{self.spec.text}: {exc}")
            except Exception as exc:
                log.exception("%s: reader failed", self.spec.text)
                error = MediaError(f"{self.spec.text}: reader failed: {exc!r}")
            if self._stop.is_set():
                return
            error = error or MediaError(f"{self.spec.text}: the source ended")
            if not self.spec.live or isinstance(error, BFramesError):
                ended(error)
                return
            if sum(s.items for s in self.streams.values()) > published:
                delay = RETRY_FIRST  # it worked for a while: start the backoff again
            if not self._reconnect(error, delay):
                return
            delay = min(delay * 2, RETRY_MAX)
            resume_at = self._timeline_end

    def _reconnect(self, error: BaseException, delay: float) -> bool:
        """Reopen a lost live source, with backoff, until it works or we stop."""
        reason = str(error)
        while True:
            self._status(f"{reason}; reconnecting in {delay:.1f} s")
            if self._stop.wait(delay):
                return False
            with contextlib.suppress(av.FFmpegError, OSError):
                self.container.close()
            try:
                self._open()
            except MediaError as exc:
                reason = str(exc)
                delay = min(delay * 2, RETRY_MAX)
                continue
            self.reconnects += 1
            self._status(f"{self.spec.text}: reconnected")
            return True

    def _status(self, line: str) -> None:
        log.warning("%s", line)
        if self.on_status is not None:
            self.on_status(line)

    def _packets(self) -> Iterator[av.Packet[Any]]:
        yield from self._probed
        self._probed = []
        yield from self.container.demux(*(s.stream for s in self.streams.values()))

    def _read(self, publish: Publish, resume_at: float | None = None) -> None:
        """Publish what the container holds (a file again and again); after a
        reconnect (``resume_at``: where the timeline had got to), timestamps go
        on from there and video restarts at a keyframe."""
        by_index = {s.stream.index: s for s in self.streams.values()}
        pace = not self.spec.live
        start_wall: float | None = None
        start_media = 0.0
        offset = 0.0  # seconds added to timestamps on each loop of a file
        need_keyframe = resume_at is not None and "video" in self.streams
        while not self._stop.is_set():
            loop_end = offset
            for packet in self._packets():
                if self._stop.is_set():
                    return
                state = by_index.get(packet.stream_index)
                if state is None or (packet.size == 0 and state.mode is Mode.PASSTHROUGH):
                    continue
                if resume_at is not None and packet.pts is not None:
                    # the new session's clock starts anywhere: continue ours
                    offset = resume_at - float(packet.pts * packet.time_base)
                    resume_at = None
                for item, seconds in self._items(state, packet, offset):
                    if need_keyframe:
                        if state.kind != "video" or not item.keyframe:
                            continue
                        need_keyframe = False
                    if pace:
                        if start_wall is None:
                            start_wall, start_media = time.monotonic(), seconds
                        delay = start_wall + (seconds - start_media) - time.monotonic()
                        if delay > 0 and self._stop.wait(delay):
                            return
                    state.items += 1
                    state.keyframes += item.keyframe
                    loop_end = max(loop_end, seconds + self._frame_seconds(state))
                    self._timeline_end = max(self._timeline_end, loop_end)
                    publish(state.kind, item)
            if self.spec.live:
                return  # the source ended: _run reports it
            # A file stands for a camera: play it again, timestamps going on.
            offset = loop_end
            try:
                self.container.seek(0)
            except av.FFmpegError as exc:
                raise MediaError(f"{self.spec.text}: cannot loop (seek failed: {exc})") from None
            for state in self.streams.values():
                if state.mode is not Mode.PASSTHROUGH:
                    state.stream.codec_context.flush_buffers()

    @staticmethod
    def _frame_seconds(state: StreamState) -> float:
        rate = state.stream.average_rate if state.kind == "video" else None
        return float(1 / rate) if rate else 0.02

    def _items(
        self, state: StreamState, packet: av.Packet[Any], offset: float
    ) -> Iterator[tuple[Item, float]]:
        time_base: Any = packet.time_base or state.stream.time_base
        if state.mode is Mode.PASSTHROUGH:
            pts = packet.pts if packet.pts is not None else packet.dts
            if pts is None:  # raw elementary streams (or RTSP's first packet): go on
                seconds = state.last_pts + self._frame_seconds(state) if state.items else 0.0
            else:
                seconds = float(pts * time_base) + offset
            state.last_pts = seconds
            data = bytes(packet)
            if state.normalizer is not None:
                unit = state.normalizer.process(data)
                data, keyframe = unit.data, unit.keyframe
            elif state.codec_name == "vp8":
                keyframe = vp8_keyframe(data)
            else:
                keyframe = True
            out = av.Packet(data)
            out.time_base = fractions.Fraction(1, 90000 if state.kind == "video" else 48000)
            out.pts = round(seconds / out.time_base)
            yield Item(out, keyframe), seconds
            return
        for frame in state.stream.codec_context.decode(packet):
            if frame.pts is None:
                continue
            seconds = float(frame.pts * frame.time_base) + offset
            frame.pts = round(seconds / frame.time_base)
            if state.mode is Mode.ENCODE_ONCE:
                for encoded in self._encode(state, frame):
                    yield Item(encoded, encoded.is_keyframe), seconds
            elif state.kind == "audio":
                # aiortc's Opus encoder takes s16 only: convert once, not per viewer
                if state.resampler is None:
                    state.resampler = av.AudioResampler(format="s16", layout="stereo", rate=48000)
                for out in state.resampler.resample(frame):
                    yield Item(out, True), float(out.pts * out.time_base)
            else:
                if frame.format.name != "yuv420p":  # what aiortc's encoders take
                    frame = frame.reformat(format="yuv420p")
                yield Item(frame, True), seconds

    def _encode(self, state: StreamState, frame: av.VideoFrame) -> list[av.Packet[Any]]:
        """Encode-once: one libx264 for all viewers, Baseline without B-frames,
        parameter sets repeated before each IDR (x264 does unless told not to)."""
        if state.encoder is None:
            rate = state.stream.average_rate or 30
            encoder: Any = av.CodecContext.create("libx264", "w")
            encoder.width, encoder.height = frame.width, frame.height
            encoder.pix_fmt = "yuv420p"
            encoder.time_base = frame.time_base
            encoder.framerate = rate
            # about 0.1 bit per pixel at the frame rate: ~0.7 Mbit/s at 640x360x30
            encoder.bit_rate = int(frame.width * frame.height * float(rate) * 0.1)
            encoder.options = {
                "profile": "baseline",
                "preset": "ultrafast",
                "tune": "zerolatency",
                "x264-params": f"keyint={round(float(rate) * 2)}:bframes=0",
            }
            state.encoder = encoder
        frame = frame.reformat(format="yuv420p")
        if self._keyframe_wanted.is_set():
            self._keyframe_wanted.clear()
            frame.pict_type = av.video.frame.PictureType.I
        else:
            # sources mark pictures as I (lavfi does); libx264 would obey
            frame.pict_type = av.video.frame.PictureType.NONE
        packets: list[av.Packet[Any]] = state.encoder.encode(frame)
        for packet in packets:
            packet.time_base = state.encoder.time_base
        return packets
