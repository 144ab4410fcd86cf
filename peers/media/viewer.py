"""``rtc-peer offer --record/--duration/--control``: a viewer of a camera peer.

The offer adds recvonly video and audio transceivers and opens the
``control`` data channel; what arrives is counted and, with ``record``,
remuxed into a file (never decoded: :mod:`peers.media.receive`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamTrack

from rtc_signal.peers.channel import Channel
from rtc_signal.peers.errors import ChannelClosed, PeerError
from rtc_signal.peers.media.h264 import MediaError
from rtc_signal.peers.media.receive import Recorder, encoded_frames, pump
from rtc_signal.peers.media.timeline import SETTLE
from rtc_signal.peers.session import PeerConfig, call
from rtc_signal.proto.control import COMMANDS, CONTROL_LABEL, request

log = logging.getLogger(__name__)

#: how long a control reply may take (seconds)
REPLY_TIMEOUT = 10.0
#: how long a recording may take to get its first keyframe once connected
RECORDING_START = 15.0
#: a recording's last frames reach us this much after their time (aiortc's
#: jitter buffer holds audio 80 ms): wait for them past the deadline
LATE_FRAMES = 0.25


@dataclass
class WatchResult:
    seconds: float = 0.0
    frames: dict[str, int] = field(default_factory=dict)
    recorded: dict[str, int] = field(default_factory=dict)
    replies: list[dict[str, Any]] = field(default_factory=list)
    size: tuple[int, int] | None = None
    codec: str | None = None


def parse_control(text: str, request_id: int) -> str:
    """``--control`` CMD as given: a command name (``ping`` gets our clock)
    or a raw JSON request, sent as it is (to try malformed ones too)."""
    if text.lstrip().startswith("{"):
        return text
    if text not in COMMANDS:
        raise MediaError(f"--control: unknown command {text!r} (known: {', '.join(COMMANDS)})")
    if text == "ping":
        return request("ping", request_id, t=time.time() * 1000)
    return request(text, request_id)


async def run_controls(
    channel: Channel, controls: list[str], echo: Callable[[str], None]
) -> list[dict[str, Any]]:
    """Send each request and wait for its reply (one at a time)."""
    replies: list[dict[str, Any]] = []
    for number, text in enumerate(controls, 1):
        await channel.send(parse_control(text, number))
        try:
            raw = await asyncio.wait_for(channel.receive(), REPLY_TIMEOUT)
        except ChannelClosed:
            raise PeerError(f"the control channel closed before the reply to {text!r}") from None
        except TimeoutError:
            raise PeerError(
                f"no reply to control request {text!r} within {REPLY_TIMEOUT:g} s"
            ) from None
        reply = json.loads(raw)
        if reply.get("cmd") == "ping" and reply.get("ok"):
            reply["rtt_ms"] = round(time.time() * 1000 - reply["result"]["t"], 2)
        replies.append(reply)
        echo(json.dumps(reply))
    return replies


async def watch(
    config: PeerConfig,
    target: str,
    peer_id: str | None,
    record: Path | None,
    duration: float | None,
    controls: list[str],
    echo: Callable[[str], None],
) -> WatchResult:
    """Watch ``target`` for ``duration`` seconds (or until SIGINT/SIGTERM)."""
    for text in controls:
        parse_control(text, 0)  # refuse unknown names before calling
    recording = asyncio.Event()
    recorder = (
        Recorder(record, duration, on_start=lambda _: recording.set())
        if record is not None
        else None
    )
    tracks: dict[str, MediaStreamTrack] = {}
    transceivers: dict[str, Any] = {}

    def prepare(pc: RTCPeerConnection) -> None:
        for kind in ("video", "audio"):
            transceivers[kind] = pc.addTransceiver(kind, direction="recvonly")

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            encoded_frames(track)  # before its receiver starts: no decoder
            tracks[track.kind] = track

    result = WatchResult()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    started = loop.time()
    try:
        async with call(config, target, peer_id, CONTROL_LABEL, prepare=prepare) as c:
            active = {
                kind: tracks[kind]
                for kind, t in transceivers.items()
                if t.currentDirection in ("recvonly", "sendrecv") and kind in tracks
            }
            if not active and (record is not None or duration is not None):
                raise MediaError(f"{target!r} sends no audio or video (is it run with --video?)")
            if recorder is not None:
                recorder.expect(video="video" in active, audio="audio" in active)
            pumps = [
                asyncio.create_task(pump(track, kind, recorder, result.frames))
                for kind, track in active.items()
            ]
            try:
                result.replies = await run_controls(c.channel, controls, echo)
                waiters: set[asyncio.Future[Any]] = {
                    asyncio.ensure_future(asyncio.wait(pumps)),
                    asyncio.ensure_future(stop.wait()),
                }
                if duration is not None:
                    deadline = started + duration
                    if recorder is not None:
                        # the file is to hold `duration` seconds: count from its
                        # first keyframe (written once the timeline has settled)
                        first = asyncio.ensure_future(recording.wait())
                        done, _ = await asyncio.wait(
                            waiters | {first},
                            timeout=RECORDING_START + SETTLE,
                            return_when="FIRST_COMPLETED",
                        )
                        first.cancel()
                        if recorder.origin is not None and not done & waiters:
                            deadline = recorder.origin + duration + LATE_FRAMES
                    remaining = max(0.0, deadline - loop.time())
                    await asyncio.wait(waiters, timeout=remaining, return_when="FIRST_COMPLETED")
                elif not controls or record is not None:
                    await asyncio.wait(waiters, return_when="FIRST_COMPLETED")
                for waiter in waiters:
                    waiter.cancel()
                for task in pumps:
                    if task.done() and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
            finally:
                for task in pumps:
                    task.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        if recorder is not None:
            recorder.close()
            result.recorded = dict(recorder.frames)
            result.size = recorder.size
            result.codec = recorder.video_mime
    result.seconds = loop.time() - started
    return result
