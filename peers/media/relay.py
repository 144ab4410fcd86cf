"""The fan-out relay: one input, one queue per viewer.

The reader thread of a :class:`~peers.media.sources.MediaInput` publishes
each item once; :meth:`Relay.publish` (on the event loop) offers it to every
viewer's :class:`ViewerTrack`, which aiortc's RTCRtpSender reads. An
``av.Packet`` is only packetized by the sender (aiortc's ``Encoder.pack``),
a frame is encoded by that viewer's own encoder.

Per viewer, for encoded video: a new (or resumed, or lagging) viewer waits
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
        if self._queue.qsize() >= QUEUE_LIMIT:
            # lagging: what is queued is stale; start again at a keyframe
            self.dropped += self._queue.qsize()
            while not self._queue.empty():
                self._queue.get_nowait()
            if self.needs_keyframe and not item.keyframe:
                self.waiting_keyframe = True
                return
        self._queue.put_nowait(item)

    def pause(self) -> None:
        self.paused = True
        while not self._queue.empty():
            self._queue.get_nowait()

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            self.waiting_keyframe = self.needs_keyframe

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
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
        for track in list(self.viewers):
            track.offer(item)

    def end(self) -> None:
        """The source ended: every viewer's track ends (its sender stops)."""
        self.ended = True
        for track in list(self.viewers):
            track.offer(None)
        self.viewers.clear()
