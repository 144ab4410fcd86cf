"""rtc_signal.peers.media.relay: what each viewer's track gets from the shared input."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import av
import pytest
from aiortc.mediastreams import MediaStreamError

from rtc_signal.peers.media.relay import QUEUE_LIMIT, Relay, ViewerTrack
from rtc_signal.peers.media.sources import Item, MediaInput, parse_source
from rtc_signal.peers.media.testclip import make_clip
from tests.conftest import run


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MediaInput]:
    clip = make_clip(tmp_path_factory.mktemp("relay") / "c.ts", seconds=0.2, width=160, height=120)
    source = MediaInput(parse_source(str(clip), "video"), ("video",), False)
    yield source  # never started: the tests publish by hand
    source.close()


def item(n: int, keyframe: bool) -> Item:
    packet = av.Packet(bytes([n % 256]))
    packet.pts = n
    return Item(packet, keyframe)


def queued(track: object) -> list[int]:
    q = track._queue  # type: ignore[attr-defined]
    return [bytes(i.payload)[0] for i in list(q._queue)]


def reading(track: ViewerTrack) -> ViewerTrack:
    """``track`` as once its sender has started reading it (the call is up)."""
    track.reading = True
    return track


def test_a_new_viewer_starts_at_the_next_keyframe(media: MediaInput) -> None:
    async def main() -> None:
        relay = Relay(media, "video")
        early = reading(relay.subscribe())
        relay.publish(item(1, True))
        relay.publish(item(2, False))
        late = reading(relay.subscribe())  # joins mid-GOP
        relay.publish(item(3, False))
        relay.publish(item(4, True))
        relay.publish(item(5, False))
        assert queued(early) == [1, 2, 3, 4, 5]
        assert queued(late) == [4, 5]

    run(main())


def test_a_lagging_viewer_drops_its_backlog_and_waits_for_a_keyframe(media: MediaInput) -> None:
    """A viewer that does not read is cut back instead of growing memory; the
    one that reads is not affected."""

    async def main() -> None:
        relay = Relay(media, "video")
        slow, fast = reading(relay.subscribe()), relay.subscribe()
        relay.publish(item(0, True))
        for n in range(1, QUEUE_LIMIT + 5):
            relay.publish(item(n, False))
            await fast.recv()
        await fast.recv()
        assert slow.dropped == QUEUE_LIMIT and slow.waiting_keyframe
        assert queued(slow) == []
        relay.publish(item(200, True))
        assert queued(slow) == [200] and queued(fast) == [200]

    run(main())


def test_before_its_sender_reads_a_viewer_keeps_only_the_latest_gop(media: MediaInput) -> None:
    """While a viewer's call is set up, what it will get at once is bounded:
    encoded video from the latest keyframe on (no backlog burst), and once it
    reads, everything in real time."""

    async def main() -> None:
        relay = Relay(media, "video")
        track = relay.subscribe()
        for n in range(1, 31):  # two GOPs of 15
            relay.publish(item(n, n % 15 == 1))
        assert queued(track) == list(range(16, 31))
        assert track.dropped == 15
        assert bytes(await track.recv())[0] == 16
        relay.publish(item(31, True))  # a keyframe no longer cuts what is queued
        assert queued(track)[-2:] == [30, 31] and len(queued(track)) == 15

    run(main())


def test_pause_stops_and_resume_restarts_at_a_keyframe(media: MediaInput) -> None:
    async def main() -> None:
        relay = Relay(media, "video")
        track = relay.subscribe()
        relay.publish(item(1, True))
        track.pause()
        relay.publish(item(2, False))
        relay.publish(item(3, True))
        assert queued(track) == []
        track.resume()
        relay.publish(item(4, False))
        relay.publish(item(5, True))
        assert queued(track) == [5]

    run(main())


def test_end_of_the_source_ends_every_track(media: MediaInput) -> None:
    async def main() -> None:
        relay = Relay(media, "video")
        track = relay.subscribe()
        relay.end()
        with pytest.raises(MediaStreamError):
            await asyncio.wait_for(track.recv(), 5)
        with pytest.raises(MediaStreamError):  # a viewer arriving afterwards too
            await asyncio.wait_for(relay.subscribe().recv(), 5)
        assert relay.viewers == set()

    run(main())


def test_stopping_a_track_unsubscribes_it(media: MediaInput) -> None:
    async def main() -> None:
        relay = Relay(media, "video")
        track = relay.subscribe()
        track.stop()
        assert relay.viewers == set()

    run(main())
