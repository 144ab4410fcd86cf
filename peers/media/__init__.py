"""Media for rtc-peer: send a file, RTSP feed, device or test pattern to many
viewers without transcoding; record, stats and control commands.

- :mod:`peers.media.sources`: inputs (one demuxer per source) and how each
  stream is sent (passthrough, encode-once, frames).
- :mod:`peers.media.h264`: Annex-B/avcC, SPS/PPS injection, B-frame check.
- :mod:`peers.media.relay`: the fan-out to each viewer's track.
- :mod:`peers.media.server`: the camera (answer) side, stats and control.
- :mod:`peers.media.receive` / :mod:`peers.media.viewer`: the viewer side,
  recording by remuxing.
"""

from rtc_signal.peers.media.h264 import BFramesError, MediaError
from rtc_signal.peers.media.server import MediaServer, serve_media
from rtc_signal.peers.media.sources import SourceSpec, parse_source
from rtc_signal.peers.media.viewer import WatchResult, watch

__all__ = [
    "BFramesError",
    "MediaError",
    "MediaServer",
    "SourceSpec",
    "WatchResult",
    "parse_source",
    "serve_media",
    "watch",
]
