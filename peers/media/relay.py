"""The fan-out relay: one input, one queue per viewer.

The reader thread of a :class:`~peers.media.sources.MediaInput` publishes
each item once; :meth:`Relay.publish` (on the event loop) offers it to every
viewer's :class:`ViewerTrack`, which aiortc's RTCRtpSender reads. An
``av.Packet`` is only packetized by the sender (aiortc's ``Encoder.pack``),
a frame is encoded by that viewer's own encoder.

Until a viewer's sender starts reading (its call is being set up), only
what a start needs is kept (encoded video from the latest keyframe on, or the
last few items), so that it does not get a backlog in one burst. Per viewer,
for encoded video: a new (or resumed, or lagging) viewer waits
for the next keyframe, since nothing before it can be decoded; a viewer
whose queue is full (it cannot keep up) drops what is queued and waits for
the next keyframe too, instead of making memory grow or slowing the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from rtc_signal.peers.media.sources import Item, Kind, MediaInput, Mode

log = logging.getLogger(__name__)

#: items queued per viewer before it is considered lagging (~2 s of video)
QUEUE_LIMIT = 60
#: items kept for a viewer whose sender has not started, when there is no
#: video keyframe to restart from (audio alone: ~1 s of 20 ms Opus frames)
PRESTART_ITEMS = 50


class ViewerTrack(MediaStreamTrack):
    """What one viewer's sender reads: the relay's items, from a keyframe on."""

    def __init__(self, relay: Relay) -> None:
        super().__init__()
        self.kind = relay.kind
        self.relay = relay
        self.paused = False
        #: encoded video must start at a keyframe; frames and audio need not
        self.needs_keyframe = relay.keyframes_matter
        self.waiting_keyframe = self.needs_keyframe
        self.delivered = 0
        self.dropped = 0
        #: whether its sender has started reading (the call is set up)
        self.reading = False
        self._restarts = relay.media.keyframes_published
        self._queue: asyncio.Queue[Item | None] = asyncio.Queue()

    def offer(self, item: Item | None) -> None:
        if item is None:
            self._queue.put_nowait(None)
            return
        if self.paused:
            return
        if self.waiting_keyframe:
            if not item.keyframe:
                return
            self.waiting_keyframe = False
        if not self.reading:
            # The call is still being set up: whatever queues now would reach
            # the viewer in one burst, faster than real time, once its sender
            # starts (about 1.2 s of it was measured; a paused viewer got it
            # all before its pause). Keep only what a start needs: encoded
            # video from the latest keyframe on, else the last few items.
            # Audio restarts with the video's latest keyframe, so that both
            # start together (a recording starts at the first keyframe).
            published = self.relay.media.keyframes_published
            if (self.needs_keyframe and item.keyframe) or published != self._restarts:
                self._restarts = published
                self.dropped += self._queue.qsize()
                self._drain()
            elif not self.needs_keyframe and self._queue.qsize() >= PRESTART_ITEMS:
                self.dropped += 1
                self._queue.get_nowait()
        if self._queue.qsize() >= QUEUE_LIMIT:
            # lagging: what is queued is stale; start again at a keyframe
            self.dropped += self._queue.qsize()
            self._drain()
            if self.needs_keyframe and not item.keyframe:
                self.waiting_keyframe = True
                return
        self._queue.put_nowait(item)

    def _drain(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()

    def pause(self) -> None:
        self.paused = True
        self._drain()

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            self.waiting_keyframe = self.needs_keyframe

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        self.reading = True
        item = await self._queue.get()
        if item is None:
            self.stop()
            raise MediaStreamError
        self.delivered += 1
        return item.payload

    def stop(self) -> None:
        super().stop()
        self.relay.unsubscribe(self)


class Relay:
    """Fans one kind of one input out to its viewers."""

    def __init__(
        self, media: MediaInput, kind: Kind, start: Callable[[], None] | None = None
    ) -> None:
        self.media = media
        self.kind = kind
        self.state = media.streams[kind]
        self.keyframes_matter = kind == "video" and self.state.mode is not Mode.FRAMES
        self._start = start
        self.viewers: set[ViewerTrack] = set()
        self.ended = False

    def subscribe(self) -> ViewerTrack:
        track = ViewerTrack(self)
        if self.ended:
            track.offer(None)
        else:
            self.viewers.add(track)
            if self._start is not None:
                self._start()
        return track

    def unsubscribe(self, track: ViewerTrack) -> None:
        self.viewers.discard(track)

    def publish(self, item: Item) -> None:
        if self.kind == "video" and item.keyframe:
            self.media.keyframes_published += 1
        for track in list(self.viewers):
            track.offer(item)

    def end(self) -> None:
        """The source ended: every viewer's track ends (its sender stops)."""
        self.ended = True
        for track in list(self.viewers):
            track.offer(None)
        self.viewers.clear()
