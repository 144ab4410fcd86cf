"""Generate small H.264 clips with PyAV (libx264), for tests and benchmarks.

The picture is FFmpeg's ``testsrc2`` pattern (through lavfi), so no numpy is
needed; Baseline profile without B-frames by default, which is what
passthrough to browsers wants.
"""

from __future__ import annotations

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
