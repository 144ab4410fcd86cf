"""H.264 (and VP8) bitstream handling for passthrough: pure functions, no I/O.

What forwarding encoded video to browsers needs, without decoding it:

- Annex-B (start codes, MPEG-TS, RTSP) vs avcC (length-prefixed NAL units and
  parameter sets in the extradata, MP4/MKV): everything leaves as Annex-B,
  which is what aiortc's packetizer splits into RTP payloads (RFC 6184).
- SPS/PPS before each IDR: a viewer joining mid-stream can decode nothing
  until it has them, and many sources send them once (in the extradata, or
  only at the start); :class:`H264Normalizer` puts the latest ones in front
  of every IDR access unit that lacks them.
- B-frames: browsers' WebRTC H.264 decoders assume decode order equals
  presentation order, so a stream with B slices is refused with a clear error.
- Keyframes (IDR) and picture size, for joining viewers and for recorders.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from rtc_signal.peers.errors import PeerError

NAL_SLICE = 1
NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9
START_CODE = b"\x00\x00\x00\x01"

#: slice_type % 5 (H.264 7.4.3): 0 P, 1 B, 2 I, 3 SP, 4 SI
_B_SLICE = 1


class MediaError(PeerError):
    """A media source or recording cannot be used (clear message for the CLI)."""


class BFramesError(MediaError):
    """The H.264 stream has B-frames, which WebRTC viewers cannot play."""


def nal_type(nal: bytes) -> int:
    return nal[0] & 0x1F if nal else 0


def is_annexb(data: bytes) -> bool:
    return data.startswith(b"\x00\x00\x01") or data.startswith(START_CODE)


def split_annexb(data: bytes) -> list[bytes]:
    """The NAL units of an Annex-B buffer (start codes removed; a 4-byte start
    code's leading zero is not part of the previous unit)."""
    units: list[bytes] = []
    i = data.find(b"\x00\x00\x01")
    while i != -1:
        start = i + 3
        nxt = data.find(b"\x00\x00\x01", start)
        end = len(data) if nxt == -1 else nxt
        unit = data[start:end]
        if nxt != -1:
            unit = unit.rstrip(b"\x00")  # trailing_zero_8bits / the next 4-byte code
        if unit:
            units.append(unit)
        i = nxt
    return units


def split_avcc(data: bytes, length_size: int) -> list[bytes]:
    """The NAL units of a length-prefixed (avcC / MP4) buffer."""
    units: list[bytes] = []
    pos = 0
    while pos + length_size <= len(data):
        size = int.from_bytes(data[pos : pos + length_size], "big")
        pos += length_size
        if size == 0 or pos + size > len(data):
            raise MediaError(f"malformed length-prefixed H.264 data (NAL size {size})")
        units.append(data[pos : pos + size])
        pos += size
    if pos != len(data):
        raise MediaError("malformed length-prefixed H.264 data (trailing bytes)")
    return units


def join_annexb(units: Iterable[bytes]) -> bytes:
    return b"".join(START_CODE + unit for unit in units)


@dataclass(frozen=True)
class AvcConfig:
    """What an avcC extradata (ISO 14496-15 AVCDecoderConfigurationRecord) holds."""

    length_size: int
    sps: tuple[bytes, ...]
    pps: tuple[bytes, ...]


def parse_avcc(extradata: bytes) -> AvcConfig:
    if len(extradata) < 7 or extradata[0] != 1:
        raise MediaError("malformed avcC extradata")
    length_size = (extradata[4] & 0x03) + 1
    pos = 5
    sets: list[list[bytes]] = [[], []]
    for which in (0, 1):
        if pos >= len(extradata):
            raise MediaError("malformed avcC extradata (truncated)")
        count = extradata[pos] & (0x1F if which == 0 else 0xFF)
        pos += 1
        for _ in range(count):
            size = int.from_bytes(extradata[pos : pos + 2], "big")
            pos += 2
            unit = extradata[pos : pos + size]
            if len(unit) != size:
                raise MediaError("malformed avcC extradata (truncated)")
            sets[which].append(unit)
            pos += size
    return AvcConfig(length_size, tuple(sets[0]), tuple(sets[1]))


class _Bits:
    """Exp-Golomb reader over an RBSP (emulation prevention bytes removed)."""

    def __init__(self, nal: bytes) -> None:
        self.data = nal[1:].replace(b"\x00\x00\x03", b"\x00\x00")
        self.pos = 0

    def bit(self) -> int:
        byte = self.pos >> 3
        if byte >= len(self.data):
            raise MediaError("truncated H.264 header")
        value = (self.data[byte] >> (7 - (self.pos & 7))) & 1
        self.pos += 1
        return value

    def bits(self, n: int) -> int:
        value = 0
        for _ in range(n):
            value = (value << 1) | self.bit()
        return value

    def ue(self) -> int:
        zeros = 0
        while self.bit() == 0:
            zeros += 1
            if zeros > 31:
                raise MediaError("malformed H.264 Exp-Golomb code")
        return (1 << zeros) - 1 + self.bits(zeros)

    def se(self) -> int:
        value = self.ue()
        return (value + 1) // 2 if value & 1 else -(value // 2)


def slice_type(nal: bytes) -> int:
    """slice_type % 5 of a coded slice NAL unit (0 P, 1 B, 2 I, 3 SP, 4 SI)."""
    bits = _Bits(nal[:32])
    bits.ue()  # first_mb_in_slice
    return bits.ue() % 5


@dataclass(frozen=True)
class SpsInfo:
    profile_idc: int
    level_idc: int
    width: int
    height: int


_HIGH_PROFILES = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135}


def parse_sps(nal: bytes) -> SpsInfo:
    """Profile, level and cropped picture size of an SPS (H.264 7.3.2.1.1)."""
    b = _Bits(nal)
    profile = b.bits(8)
    b.bits(8)  # constraint flags
    level = b.bits(8)
    b.ue()  # seq_parameter_set_id
    chroma_format = 1
    if profile in _HIGH_PROFILES:
        chroma_format = b.ue()
        if chroma_format == 3:
            b.bit()  # separate_colour_plane_flag
        b.ue()  # bit_depth_luma_minus8
        b.ue()  # bit_depth_chroma_minus8
        b.bit()  # qpprime_y_zero_transform_bypass_flag
        if b.bit():  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format != 3 else 12):
                if b.bit():
                    last, nxt = 8, 8
                    for _ in range(16 if i < 6 else 64):
                        if nxt:
                            nxt = (last + b.se() + 256) % 256
                        last = nxt or last
    b.ue()  # log2_max_frame_num_minus4
    poc_type = b.ue()
    if poc_type == 0:
        b.ue()
    elif poc_type == 1:
        b.bit()
        b.se()
        b.se()
        for _ in range(b.ue()):
            b.se()
    b.ue()  # max_num_ref_frames
    b.bit()  # gaps_in_frame_num_value_allowed_flag
    width_mbs = b.ue() + 1
    height_units = b.ue() + 1
    frame_mbs_only = b.bit()
    if not frame_mbs_only:
        b.bit()  # mb_adaptive_frame_field_flag
    b.bit()  # direct_8x8_inference_flag
    width, height = width_mbs * 16, height_units * 16 * (2 - frame_mbs_only)
    if b.bit():  # frame_cropping_flag
        left, right, top, bottom = b.ue(), b.ue(), b.ue(), b.ue()
        crop_x = 2 if chroma_format in (1, 2) else 1
        crop_y = (2 if chroma_format == 1 else 1) * (2 - frame_mbs_only)
        width -= (left + right) * crop_x
        height -= (top + bottom) * crop_y
    return SpsInfo(profile, level, width, height)


@dataclass(frozen=True)
class AccessUnit:
    """One picture's NAL units as Annex-B, ready for aiortc's packetizer."""

    data: bytes
    keyframe: bool


class H264Normalizer:
    """Turns a source's access units into Annex-B with SPS/PPS before each IDR.

    ``extradata`` is the stream's codec extradata: avcC (MP4/MKV: the access
    units are then length-prefixed) or Annex-B parameter sets (or empty).
    ``source`` names the input in error messages.
    """

    def __init__(self, extradata: bytes | None, source: str = "the source") -> None:
        self.source = source
        self.length_size: int | None = None
        self.sps: bytes | None = None
        self.pps: bytes | None = None
        self.injected = 0  #: IDRs that got the parameter sets from us
        if extradata and not is_annexb(extradata):
            config = parse_avcc(extradata)
            self.length_size = config.length_size
            self.sps = config.sps[0] if config.sps else None
            self.pps = config.pps[0] if config.pps else None
        elif extradata:
            self._remember(split_annexb(extradata))

    def _remember(self, units: list[bytes]) -> None:
        for unit in units:
            kind = nal_type(unit)
            if kind == NAL_SPS:
                self.sps = unit
            elif kind == NAL_PPS:
                self.pps = unit

    def process(self, data: bytes) -> AccessUnit:
        """Normalize one access unit; BFramesError if it holds a B slice."""
        if self.length_size is not None:
            # the container says length-prefixed; a first NAL of 256-511 bytes
            # starts with 00 00 01, so no guessing from the bytes (but a muxer
            # that stored Annex-B anyway is still read)
            try:
                units = split_avcc(data, self.length_size)
            except MediaError:
                units = split_annexb(data)
        else:
            units = split_annexb(data)
        self._remember(units)
        kinds = [nal_type(unit) for unit in units]
        for unit, kind in zip(units, kinds, strict=True):
            if kind in (NAL_SLICE, NAL_IDR) and slice_type(unit) == _B_SLICE:
                raise BFramesError(
                    f"{self.source} has B-frames, which browsers' WebRTC decoders cannot "
                    "play in passthrough; re-encode it without B-frames (e.g. H.264 "
                    "Baseline, or x264 bframes=0), or use --transcode"
                )
        keyframe = NAL_IDR in kinds
        missing = NAL_SPS not in kinds or NAL_PPS not in kinds
        if keyframe and missing and self.sps is not None and self.pps is not None:
            # after an access unit delimiter, if any, as H.264 7.4.1.2.3 orders them
            at = 1 if kinds and kinds[0] == NAL_AUD else 0
            extra = [u for u, k in ((self.sps, NAL_SPS), (self.pps, NAL_PPS)) if k not in kinds]
            units = units[:at] + extra + units[at:]
            self.injected += 1
        return AccessUnit(join_annexb(units), keyframe)


def vp8_keyframe(frame: bytes) -> bool:
    """Whether a VP8 frame is a key frame (RFC 6386 9.1: P bit clear)."""
    return bool(frame) and not frame[0] & 0x01


def vp8_size(frame: bytes) -> tuple[int, int] | None:
    """Width and height from a VP8 key frame header, else None."""
    if not vp8_keyframe(frame) or len(frame) < 10 or frame[3:6] != b"\x9d\x01\x2a":
        return None
    width = int.from_bytes(frame[6:8], "little") & 0x3FFF
    height = int.from_bytes(frame[8:10], "little") & 0x3FFF
    return width, height
