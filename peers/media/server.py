"""The camera side: :class:`MediaServer` gives every caller the shared tracks.

:class:`~peers.session.AnswerPeer` calls :meth:`MediaServer.attach` with each
offer before applying it: for each audio/video m-line of the offer it adds a
send transceiver fed by the relay (H.264 forced in negotiation when H.264 is
passed through), so a caller gets the tracks whether it also opens a data
channel or not (WHEP players and browsers' recvonly offers have none:
:meth:`serve_without_channel` then keeps the call until the connection
ends). A caller's ``control`` data channel is served by :meth:`serve_control`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCPeerConnection, RTCRtpSender
from aiortc.rtcrtpparameters import RTCRtpCodecCapability
from aiortc.sdp import SessionDescription as SdpDescription

from rtc_signal.peers.channel import Channel
from rtc_signal.peers.errors import ChannelClosed, ConnectTimeout
from rtc_signal.peers.media.h264 import MediaError
from rtc_signal.peers.media.relay import Relay, ViewerTrack
from rtc_signal.peers.media.sources import Item, Kind, MediaInput, Mode, SourceSpec
from rtc_signal.peers.media.stats import StatsBook, format_line, process_stats, serve_stats
from rtc_signal.proto.bodies import SessionDescription
from rtc_signal.proto.control import (
    ControlError,
    Keyframe,
    Pause,
    Ping,
    Resume,
    Stats,
    error_reply,
    ok_reply,
    parse_request,
)

log = logging.getLogger(__name__)


@dataclass
class Viewer:
    """One caller receiving the tracks."""

    id: str
    pc: RTCPeerConnection
    tracks: dict[Kind, ViewerTrack] = field(default_factory=dict)
    senders: dict[Kind, RTCRtpSender] = field(default_factory=dict)
    since: float = field(default_factory=time.monotonic)


class MediaServer:
    """Sources opened once, relays, viewers, their stats and control."""

    def __init__(
        self,
        video: SourceSpec | None,
        audio: SourceSpec | None,
        transcode: bool = False,
        on_status: Callable[[str], None] | None = None,
    ) -> None:
        self.specs: dict[Kind, SourceSpec] = {}
        if video is not None:
            self.specs["video"] = video
        if audio is not None:
            self.specs["audio"] = audio
        self.transcode = transcode
        self.on_status = on_status
        self.inputs: list[MediaInput] = []
        self.relays: dict[Kind, Relay] = {}
        self.viewers: dict[str, Viewer] = {}
        self.stats = StatsBook()
        self.failed: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- life cycle -----------------------------------------------------------------

    def open(self) -> None:
        """Open and check the sources (blocking: an RTSP server is asked)."""
        by_text: dict[str, list[Kind]] = {}
        for kind, spec in self.specs.items():
            by_text.setdefault(spec.text, []).append(kind)
        try:
            for kinds in by_text.values():
                media = MediaInput(
                    self.specs[kinds[0]], tuple(kinds), self.transcode, self.on_status
                )
                self.inputs.append(media)
                for kind in kinds:
                    self.relays[kind] = Relay(media, kind, self._starter(media))
        except BaseException:
            self.close()
            raise

    async def start(self) -> None:
        """Open the sources (in a thread) and start sampling stats."""
        self._loop = asyncio.get_running_loop()
        self.failed = self._loop.create_future()
        await asyncio.to_thread(self.open)

    def close(self) -> None:
        for media in self.inputs:
            media.close()

    def describe(self) -> str:
        parts = []
        for kind, relay in self.relays.items():
            state = relay.state
            parts.append(f"{kind} {self.specs[kind].text} ({state.codec_name}, {state.mode.value})")
        return ", ".join(parts)

    def _starter(self, media: MediaInput) -> Callable[[], None]:
        def start() -> None:
            media.start(self._publisher(media), self._ended_from_thread)

        return start

    def _publisher(self, media: MediaInput) -> Callable[[Kind, Item], None]:
        loop = self._loop
        assert loop is not None, "MediaServer.start() first"
        relays = {kind: self.relays[kind] for kind in media.streams}

        def publish(kind: Kind, item: Item) -> None:
            loop.call_soon_threadsafe(relays[kind].publish, item)

        return publish

    def _ended_from_thread(self, error: BaseException | None) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._ended, error)

    def _ended(self, error: BaseException | None) -> None:
        for relay in self.relays.values():
            relay.end()
        if self.failed is not None and not self.failed.done():
            self.failed.set_exception(error or MediaError("a media source ended"))

    # -- callers -----------------------------------------------------------------------

    def attach(self, pc: RTCPeerConnection, offer: SessionDescription, caller: str) -> None:
        """Add send transceivers for the offer's audio/video m-lines (before the
        offer is applied, so that our codec preferences take part)."""
        try:
            parsed = SdpDescription.parse(offer.sdp)
        except Exception as exc:  # aiortc's parser raises whatever it meets
            raise MediaError(f"unreadable offer SDP from {caller!r}: {exc!r}") from None
        viewer = Viewer(caller, pc)
        for media in parsed.media:
            if media.kind not in ("video", "audio") or media.kind in viewer.tracks:
                continue
            kind: Kind = "video" if media.kind == "video" else "audio"
            relay = self.relays.get(kind)
            if relay is None or media.direction not in ("recvonly", "sendrecv"):
                continue
            transceiver = pc.addTransceiver(kind, direction="sendonly")
            preferences = self._preferences(relay, kind, [c.mimeType for c in media.rtp.codecs])
            if preferences:
                transceiver.setCodecPreferences(preferences)
            elif relay.state.mime is not None:
                offered = sorted({c.mimeType for c in media.rtp.codecs}) or ["nothing"]
                raise MediaError(
                    f"{caller!r} cannot receive {relay.state.mime} (it offers "
                    f"{', '.join(offered)}); passthrough sends only that codec: "
                    "restart the camera peer with --transcode for such viewers"
                )
            track = relay.subscribe()
            transceiver.sender.replaceTrack(track)
            viewer.tracks[kind] = track
            viewer.senders[kind] = transceiver.sender
        if not viewer.tracks:
            return
        previous = self.viewers.get(caller)
        if previous is not None:
            self._forget(previous)
        self.viewers[caller] = viewer
        self.stats.add(caller)
        log.info("viewer %r gets %s", caller, ", ".join(viewer.tracks))

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState in ("closed", "failed"):
                self._forget(viewer)

    def _forget(self, viewer: Viewer) -> None:
        if self.viewers.get(viewer.id) is viewer:
            del self.viewers[viewer.id]
            self.stats.remove(viewer.id)
        for track in viewer.tracks.values():
            track.stop()

    @staticmethod
    def _preferences(relay: Relay, kind: str, offered: list[str]) -> list[RTCRtpCodecCapability]:
        """Our codecs in order: only the passed-through one when there is one
        (H.264 forced), else H.264 first (browsers and recorders take it)."""
        capabilities = RTCRtpSender.getCapabilities(kind).codecs
        offered_lower = {mime.lower() for mime in offered}
        wanted = relay.state.mime or ("video/H264" if kind == "video" else None)
        chosen = [c for c in capabilities if c.mimeType.lower() == (wanted or "").lower()]
        if relay.state.mime is None:
            chosen += [c for c in capabilities if c not in chosen and c.name.lower() != "rtx"]
        if not any(c.mimeType.lower() in offered_lower for c in chosen):
            return []
        rtx = [c for c in capabilities if c.name.lower() == "rtx"]
        return chosen + rtx

    async def serve_without_channel(
        self, pc: RTCPeerConnection, caller: str, timeout: float
    ) -> None:
        """A caller without a data channel (WHEP, a browser's recvonly offer):
        the call lasts until its connection closes or fails."""
        changed = asyncio.Event()
        pc.on("connectionstatechange", changed.set)
        deadline = asyncio.get_running_loop().time() + timeout
        while pc.connectionState not in ("connected", "closed", "failed"):
            changed.clear()
            remaining = deadline - asyncio.get_running_loop().time()
            try:
                await asyncio.wait_for(changed.wait(), max(0.0, remaining))
            except TimeoutError:
                raise ConnectTimeout(
                    f"media connection with {caller!r} not up within {timeout:g} s "
                    f"(ICE {pc.iceConnectionState})"
                ) from None
        log.info("media-only call with %r: %s", caller, pc.connectionState)
        while pc.connectionState == "connected":
            changed.clear()
            await changed.wait()
        log.info("media-only call with %r ended: %s", caller, pc.connectionState)

    # -- stats and control ------------------------------------------------------------

    async def sample(self) -> None:
        """Take one stats sample of every viewer (getStats() deltas)."""
        for viewer in list(self.viewers.values()):
            reports = []
            for sender in viewer.senders.values():
                try:
                    reports.append(await sender.getStats())
                except Exception as exc:  # a sender stopping meanwhile
                    log.debug("no stats from %r: %r", viewer.id, exc)
            self.stats.update(viewer.id, reports, self._extra(viewer))

    @staticmethod
    def _extra(viewer: Viewer) -> dict[str, Any]:
        video = viewer.tracks.get("video")
        return {
            "paused": bool(video and video.paused),
            "dropped": sum(t.dropped for t in viewer.tracks.values()),
            "seconds": round(time.monotonic() - viewer.since, 1),
        }

    async def run_sampler(self, interval: float = 1.0) -> None:
        while True:
            await self.sample()
            await asyncio.sleep(interval)

    def snapshot(self) -> dict[str, Any]:
        """Everything /stats serves: viewers, totals, sources, process."""
        return {
            **self.stats.snapshot(),
            "sources": [
                {
                    "source": self.specs[kind].text,
                    **relay.state.describe(),
                    "reconnects": relay.media.reconnects,
                }
                for kind, relay in self.relays.items()
            ],
            "process": process_stats(),
        }

    async def serve_control(self, channel: Channel, caller: str) -> None:
        """Answer control requests on ``channel`` until it closes."""
        async for message in channel:
            try:
                reply = self.control(message, caller)
            except Exception as exc:  # a bug must not end the call: say it
                log.exception("control request from %r failed", caller)
                reply = error_reply(None, f"internal error: {exc!r}")
            try:
                await channel.send(reply)
            except ChannelClosed:
                return

    def control(self, message: str | bytes, caller: str) -> str:
        """One request -> its reply (never raises for bad input)."""
        try:
            request = parse_request(message)
        except ControlError as exc:
            return error_reply(exc.request_id, str(exc))
        viewer = self.viewers.get(caller)
        if isinstance(request, Ping):
            return ok_reply(request.id, "ping", {"t": request.t})
        if isinstance(request, Stats):
            return ok_reply(
                request.id,
                "stats",
                {"viewer": self.stats.viewer(caller), "total": self.stats.total()},
            )
        video = viewer.tracks.get("video") if viewer else None
        if isinstance(request, Keyframe):
            return ok_reply(request.id, "keyframe", self._keyframe(viewer))
        if video is None:
            return error_reply(request.id, f"{caller!r} receives no video from this peer")
        if isinstance(request, Pause):
            video.pause()
            return ok_reply(request.id, "pause", {"paused": True})
        assert isinstance(request, Resume)
        video.resume()
        if video.needs_keyframe:
            video.relay.media.request_keyframe()  # where it can: sooner than the next one
        return ok_reply(request.id, "resume", {"paused": False})

    def _keyframe(self, viewer: Viewer | None) -> dict[str, Any]:
        relay = self.relays.get("video")
        if viewer is None or relay is None or "video" not in viewer.tracks:
            return {"requested": False, "reason": "no video is sent to this viewer"}
        if relay.state.mode is Mode.ENCODE_ONCE:
            return {"requested": relay.media.request_keyframe()}
        if relay.state.mode is Mode.FRAMES:
            # this viewer's own encoder; what an RTCP PLI from it would do
            send_keyframe = getattr(viewer.senders["video"], "_send_keyframe", None)
            if send_keyframe is not None:
                send_keyframe()
                return {"requested": True}
            return {"requested": False, "reason": "this aiortc cannot force a keyframe"}
        return {
            "requested": False,
            "reason": f"{relay.media.spec.text} is passed through: only the source makes "
            "keyframes (the next one comes at its own interval)",
        }


async def serve_media(
    media: MediaServer,
    serving: Awaitable[None],
    status: Callable[[str], None],
    stats_interval: float | None = None,
    stats_port: int | None = None,
    stats_host: str = "127.0.0.1",
) -> None:
    """Run ``serving`` (AnswerPeer.serve) with the stats sampler, the --stats
    printer and the /stats server, until it ends or a source fails."""
    http: asyncio.Server | None = None
    tasks: list[asyncio.Task[Any]] = []
    try:
        if stats_port is not None:
            http = await serve_stats(media.snapshot, stats_host, stats_port)
            port = http.sockets[0].getsockname()[1]
            status(f"rtc-peer: stats on http://{stats_host}:{port}/stats")
        tasks.append(asyncio.create_task(media.run_sampler(), name="media-stats"))
        if stats_interval is not None:
            tasks.append(asyncio.create_task(_print_stats(media, stats_interval, status)))
        serve_task = asyncio.ensure_future(serving)
        tasks.append(serve_task)
        assert media.failed is not None
        await asyncio.wait({serve_task, media.failed}, return_when=asyncio.FIRST_COMPLETED)
        if media.failed.done():
            media.failed.result()  # raises the source's error
        serve_task.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if http is not None:
            http.close()
            await http.wait_closed()
        media.close()


async def _print_stats(media: MediaServer, interval: float, status: Callable[[str], None]) -> None:
    while True:
        await asyncio.sleep(interval)
        status(format_line(media.snapshot()))
