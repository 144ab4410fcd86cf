"""rtc_signal.peers.media.h264: Annex-B/avcC handling, SPS/PPS injection, B-frame refusal,
on clips encoded here by PyAV (libx264)."""

from __future__ import annotations

from pathlib import Path

import av
import pytest

from rtc_signal.peers.media import h264
from rtc_signal.peers.media.testclip import make_clip


def access_units(path: Path) -> tuple[bytes | None, list[bytes]]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        extradata = stream.codec_context.extradata
        return extradata, [bytes(p) for p in container.demux(stream) if p.size]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("h264")
    return {
        "ts": make_clip(d / "a.ts", seconds=1, width=320, height=180),
        "mp4": make_clip(d / "a.mp4", seconds=1, width=320, height=180, repeat_headers=False),
        "b": make_clip(d / "b.ts", seconds=1, width=320, height=180, bframes=2, profile="main"),
        "odd": make_clip(d / "odd.ts", seconds=0.2, width=318, height=238),
    }


def test_annexb_split_and_join_round_trip() -> None:
    """3- and 4-byte start codes are both split; joining uses 4-byte codes."""
    data = b"\x00\x00\x00\x01\x67\x42\x00\x00\x01\x68\xce\x00\x00\x00\x01\x65\x88\x80"
    units = h264.split_annexb(data)
    assert units == [b"\x67\x42", b"\x68\xce", b"\x65\x88\x80"]
    assert h264.split_annexb(h264.join_annexb(units)) == units
    assert [h264.nal_type(u) for u in units] == [h264.NAL_SPS, h264.NAL_PPS, h264.NAL_IDR]


def test_avcc_split_refuses_truncated_data() -> None:
    """A length prefix pointing past the buffer is a MediaError, not a crash."""
    assert h264.split_avcc(b"\x00\x00\x00\x02\x65\x88", 4) == [b"\x65\x88"]
    with pytest.raises(h264.MediaError):
        h264.split_avcc(b"\x00\x00\x00\x09\x65\x88", 4)


def test_ts_clip_passes_through_unchanged_with_its_own_parameter_sets(
    clips: dict[str, Path],
) -> None:
    """A TS clip repeating SPS/PPS needs no injection; keyframes every GOP."""
    extradata, units = access_units(clips["ts"])
    normalizer = h264.H264Normalizer(extradata)
    out = [normalizer.process(u) for u in units]
    assert normalizer.injected == 0
    assert [u.data for u in out] == [h264.join_annexb(h264.split_annexb(u)) for u in units]
    assert sum(u.keyframe for u in out) == 2  # 30 frames, GOP 15


def test_avcc_mp4_becomes_annexb_with_sps_pps_before_each_idr(clips: dict[str, Path]) -> None:
    """Length-prefixed MP4 samples come out as Annex-B, and each IDR gets the
    SPS/PPS from the avcC extradata, which a fresh decoder can then decode."""
    extradata, units = access_units(clips["mp4"])
    assert extradata and extradata[0] == 1  # avcC
    normalizer = h264.H264Normalizer(extradata)
    out = [normalizer.process(u) for u in units]
    keyframes = [u for u in out if u.keyframe]
    assert normalizer.injected == len(keyframes) >= 2
    for unit in keyframes:
        kinds = [h264.nal_type(n) for n in h264.split_annexb(unit.data)]
        assert kinds.index(h264.NAL_SPS) < kinds.index(h264.NAL_PPS) < kinds.index(h264.NAL_IDR)
    decoder = av.CodecContext.create("h264", "r")  # no extradata: in-band only
    frames = [f for u in out[out.index(keyframes[1]) :] for f in decoder.decode(av.Packet(u.data))]
    frames += decoder.decode(None)
    assert frames and frames[0].width == 320


def test_b_frames_are_refused(clips: dict[str, Path]) -> None:
    """A Main-profile stream with B slices raises BFramesError saying what to do."""
    extradata, units = access_units(clips["b"])
    normalizer = h264.H264Normalizer(extradata, "b.ts")
    with pytest.raises(h264.BFramesError, match=r"b\.ts has B-frames.*--transcode"):
        for unit in units:
            normalizer.process(unit)


def test_sps_gives_the_cropped_picture_size(clips: dict[str, Path]) -> None:
    """Sizes that are not multiples of 16 come from the SPS frame cropping."""
    for name, size in (("ts", (320, 180)), ("odd", (318, 238))):
        _, units = access_units(clips[name])
        sps = next(n for n in h264.split_annexb(units[0]) if h264.nal_type(n) == h264.NAL_SPS)
        info = h264.parse_sps(sps)
        assert (info.width, info.height) == size
        assert info.profile_idc == 66


def test_vp8_keyframe_header() -> None:
    """VP8 key frames carry their size; inter frames do not."""
    key = bytes([0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A, 0x80, 0x02, 0x68, 0x01])
    assert h264.vp8_keyframe(key) and h264.vp8_size(key) == (640, 360)
    assert not h264.vp8_keyframe(b"\x11\x02\x00") and h264.vp8_size(b"\x11\x02\x00") is None
