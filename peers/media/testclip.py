"""Generate small H.264 clips with PyAV (libx264), for tests and benchmarks.

The picture is FFmpeg's ``testsrc2`` pattern (through lavfi), so no numpy is
needed; Baseline profile without B-frames by default, which is what
passthrough to browsers wants.
"""

from __future__ import annotations

import array
import math
from fractions import Fraction
from pathlib import Path
from typing import Any

import av


def make_clip(
    path: Path,
    seconds: float = 2.0,
    width: int = 640,
    height: int = 360,
    fps: int = 30,
    *,
    gop: int = 15,
    bframes: int = 0,
    profile: str = "baseline",
    bitrate: int = 800_000,
    audio: str | None = None,
    repeat_headers: bool = True,
) -> Path:
    """Write ``path`` (container from its suffix: .ts, .mp4, .mkv, .h264).

    ``repeat_headers=False`` puts the SPS/PPS in the extradata only (global
    header), as many MP4 writers do, so that passthrough must inject them.
    ``audio`` adds a 440 Hz tone with that encoder ("aac", "libopus", "mp2").
    """
    frames = round(seconds * fps)
    source = av.open(f"testsrc2=size={width}x{height}:rate={fps}", format="lavfi")
    with av.open(str(path), "w") as out:
        stream: Any = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = bitrate
        stream.time_base = Fraction(1, fps)
        x264 = f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes={bframes}"
        stream.codec_context.options = {
            "profile": profile,
            "preset": "ultrafast" if bframes == 0 else "fast",
            "x264-params": x264,
        }
        if not repeat_headers:
            stream.codec_context.flags |= av.codec.context.Flags.global_header
        elif out.format.name in ("mp4", "mov", "matroska"):
            # muxers that want the parameter sets in the extradata get them
            # there too; the stream still repeats them before each IDR
            stream.codec_context.options = {
                **stream.codec_context.options,
                "x264-params": x264 + ":repeat-headers=1",
            }
            stream.codec_context.flags |= av.codec.context.Flags.global_header
        tone = _Tone(out, audio) if audio else None
        frame: Any
        for count, frame in enumerate(source.decode(video=0)):
            if count >= frames:
                break
            frame = frame.reformat(format="yuv420p")
            frame.pts = count
            frame.time_base = Fraction(1, fps)
            # lavfi marks its frames as I pictures, and libx264 would obey
            frame.pict_type = av.video.frame.PictureType.NONE
            out.mux(stream.encode(frame))
            if tone is not None:  # interleaved, as real files are
                tone.until((count + 1) / fps)
        out.mux(stream.encode(None))
        if tone is not None:
            tone.close()
    source.close()
    return path


class _Tone:
    """A 440 Hz tone encoded alongside the video."""

    def __init__(self, out: Any, codec: str) -> None:
        self.out = out
        self.stream: Any = out.add_stream(codec, rate=48000)
        self.source = av.open("sine=frequency=440:sample_rate=48000", format="lavfi")
        self.frames: Any = self.source.decode(audio=0)
        self.samples = 0

    def until(self, seconds: float) -> None:
        while self.samples < seconds * 48000:
            frame = next(self.frames)
            frame.pts = self.samples
            frame.time_base = Fraction(1, 48000)
            self.samples += frame.samples
            self.out.mux(self.stream.encode(frame))

    def close(self) -> None:
        self.out.mux(self.stream.encode(None))
        self.source.close()


def make_flash_clip(
    path: Path, seconds: float = 2.0, width: int = 160, height: int = 120, fps: int = 30
) -> Path:
    """A clip for checking audio/video sync: a dark picture and silence for
    the first half, then a bright picture and a 1 kHz tone, switching at the
    same instant (H.264 Baseline + Opus; container from the suffix, MKV is
    what both codecs fit in). Looping it makes a switch every half."""
    rate = 48000
    frames = round(seconds * fps)
    switch = frames // 2
    with av.open(str(path), "w") as out:
        video: Any = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.time_base = Fraction(1, fps)
        video.codec_context.options = {
            "profile": "baseline",
            "preset": "ultrafast",
            "x264-params": f"keyint={fps // 2}:min-keyint={fps // 2}:scenecut=0:bframes=0",
        }
        audio: Any = out.add_stream("libopus", rate=rate, layout="mono")
        chunk = 960  # 20 ms
        tone = array.array(
            "h", (round(12000 * math.sin(2 * math.pi * 1000 * i / rate)) for i in range(rate))
        )
        sent = 0
        for index in range(frames):
            luma = 16 if index < switch else 235
            picture = av.VideoFrame(width, height, "yuv420p")
            for plane, value in zip(picture.planes, (luma, 128, 128), strict=True):
                plane.update(bytes([value]) * plane.buffer_size)
            picture.pts, picture.time_base = index, Fraction(1, fps)
            out.mux(video.encode(picture))
            while sent < (index + 1) * rate // fps:  # interleaved, as real files are
                loud = sent >= switch * rate // fps
                samples = tone[sent % rate : sent % rate + chunk] if loud else None
                block = av.AudioFrame("s16", "mono", chunk)
                block.planes[0].update(samples.tobytes() if samples else bytes(2 * chunk))
                block.sample_rate, block.pts, block.time_base = rate, sent, Fraction(1, rate)
                sent += chunk
                out.mux(audio.encode(block))
        out.mux(video.encode(None))
        out.mux(audio.encode(None))
    return path
