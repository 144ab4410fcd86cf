"""Recordings tell the truth in every container: `rtc-peer offer --record`
of a real `rtc-peer answer --video --audio` (subprocesses over 127.0.0.1),
probed with PyAV: how long the file says it is, which streams it holds,
where audio and video start, and whether a flash and a beep sent at the
same instant are recorded at the same instant."""

from __future__ import annotations

import array
import subprocess
from dataclasses import dataclass
from pathlib import Path

import av
import pytest

from rtc_signal.peers.media.testclip import make_flash_clip
from tests.integration.procs import (
    LOOPBACK,
    FilePeer,
    server,
    start_file_peer,
    wait_file_registered,
)

#: what `--duration` asks for, and how far the file may be from it
SECONDS = 3.0
TOLERANCE = 0.10
#: audio and video must start this close together (a bit over one 30 fps frame)
START_SKEW = 0.040
#: a flash and its beep must be recorded this close together: one 30 fps
#: frame (the picture's granularity) and the audio detector's 2.5 ms window
SYNC_SKEW = 1 / 30 + 0.0025
#: audio samples per loudness window (2.5 ms at 48 kHz)
WINDOW = 120
CONTAINERS = (".mkv", ".ts", ".mp4")


@dataclass(frozen=True)
class Probe:
    duration: float  #: the container's own duration (seconds)
    starts: dict[str, float]  #: first packet's pts per stream type (seconds)
    spans: dict[str, float]  #: last packet's end - first packet's pts, per stream type


def probe(path: Path) -> Probe:
    """Read ``path`` with PyAV's demuxer: the container's duration, and per
    stream its first timestamp and the span its packets cover."""
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    with av.open(str(path)) as container:
        assert container.duration is not None, path
        duration = container.duration / av.time_base
        for packet in container.demux():
            if packet.pts is None or packet.time_base is None:
                continue
            kind = packet.stream.type
            start = float(packet.pts * packet.time_base)
            end = float((packet.pts + (packet.duration or 0)) * packet.time_base)
            first[kind] = min(first.get(kind, start), start)
            last[kind] = max(last.get(kind, end), end)
    return Probe(duration, first, {k: last[k] - first[k] for k in first})


def switches(path: Path) -> tuple[list[tuple[float, bool]], list[tuple[float, bool]]]:
    """When the picture turns bright or dark, and when the tone starts or
    stops, in ``path`` (seconds, with the new state), decoded with PyAV."""
    video: list[tuple[float, bool]] = []
    audio: list[tuple[float, bool]] = []
    last: bool | None = None
    with av.open(str(path)) as container:
        for picture in container.decode(video=0):
            luma = bytes(picture.planes[0])[::97]
            bright = sum(luma) / len(luma) > 128
            if last is not None and bright != last:
                video.append((float(picture.pts * picture.time_base), bright))
            last = bright
    last = None
    with av.open(str(path)) as container:
        for sound in container.decode(audio=0):
            assert sound.format.name in ("flt", "fltp"), sound.format.name
            samples = array.array("f", bytes(sound.planes[0]))[: sound.samples]
            start = float(sound.pts * sound.time_base)
            for at in range(0, sound.samples, WINDOW):
                loud = max(abs(x) for x in samples[at : at + WINDOW]) > 0.1
                if last is not None and loud != last:
                    audio.append((start + at / sound.sample_rate, loud))
                last = loud
    return video, audio


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One camera sending H.264 + Opus from a file (both passed through): a
    flash and a beep every second; three viewers at once, each recording
    SECONDS into one container."""
    directory = tmp_path_factory.mktemp("recordings")
    clip = make_flash_clip(directory / "clip.mkv")
    paths = {suffix: directory / f"rec{suffix}" for suffix in CONTAINERS}
    with server() as url:
        cam = start_file_peer(
            "answer",
            "--id",
            "cam",
            "--signal",
            url,
            *LOOPBACK,
            "--video",
            str(clip),
            "--audio",
            str(clip),
            stdin=subprocess.DEVNULL,
            directory=directory,
            name="cam",
        )
        try:
            wait_file_registered(cam)
            viewers: list[FilePeer] = [
                start_file_peer(
                    "offer",
                    "--target",
                    "cam",
                    "--signal",
                    url,
                    *LOOPBACK,
                    "--record",
                    str(path),
                    "--duration",
                    str(SECONDS),
                    stdin=subprocess.DEVNULL,
                    directory=directory,
                    name=f"viewer{suffix}",
                )
                for suffix, path in paths.items()
            ]
            for peer in viewers:
                assert peer.wait(60) == 0, peer.stderr()
        finally:
            if cam.proc.poll() is None:
                cam.proc.terminate()
            cam.wait(10)
    return paths


@pytest.mark.parametrize("suffix", CONTAINERS)
def test_recording_lasts_what_was_asked_with_audio_and_video_in_sync(
    recordings: dict[str, Path], suffix: str
) -> None:
    """`--record X --duration 3` of a video+audio camera: the container says
    3 s +- 10 %, holds both streams, each spanning 3 s +- 10 %, and audio and
    video start within 40 ms of each other."""
    found = probe(recordings[suffix])
    assert sorted(found.starts) == ["audio", "video"], found
    assert abs(found.duration - SECONDS) <= SECONDS * TOLERANCE, found
    for kind, span in found.spans.items():
        assert abs(span - SECONDS) <= SECONDS * TOLERANCE, (kind, found)
    assert abs(found.starts["audio"] - found.starts["video"]) <= START_SKEW, found


@pytest.mark.parametrize("suffix", CONTAINERS)
def test_a_flash_and_its_beep_are_recorded_together(
    recordings: dict[str, Path], suffix: str
) -> None:
    """The camera switches picture and tone at the same instant every second;
    in the recording, each switch of the picture has the same switch of the
    tone within one frame (aiortc holds audio 80 ms and video one frame
    before handing them over: that must not show)."""
    video, audio = switches(recordings[suffix])
    assert len(video) >= 2, (video, audio)
    for at, bright in video:
        nearest = min((abs(t - at) for t, loud in audio if loud == bright), default=None)
        assert nearest is not None and nearest <= SYNC_SKEW, (at, bright, video, audio)
