"""N media viewers in one process, for benchmarks/media.py (not public API).

Each viewer calls the camera peer with recvonly video/audio transceivers and
counts what arrives without decoding it (aiortc's decoder is bypassed:
``peers.media.receive.encoded_frames``). Prints ``ready`` once every viewer
has received a frame; then each ``mark`` line on stdin prints one JSON line
of totals (frames, bytes, RTP packets received); end of stdin closes all.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from rtc_signal.peers import IceSettings, PeerConfig, call
from rtc_signal.peers.media.receive import encoded_frames
from rtc_signal.proto.control import CONTROL_LABEL


class Viewer:
    def __init__(self) -> None:
        self.frames = 0
        self.bytes = 0
        self.pc: RTCPeerConnection | None = None
        self.first = asyncio.Event()
        self.tracks: list[MediaStreamTrack] = []

    def prepare(self, pc: RTCPeerConnection) -> None:
        self.pc = pc
        pc.addTransceiver("video", direction="recvonly")

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            encoded_frames(track)
            self.tracks.append(track)

    async def count(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame: Any = await track.recv()
            except MediaStreamError:
                return
            self.frames += 1
            self.bytes += len(frame.data)
            self.first.set()

    async def packets(self) -> int:
        if self.pc is None:
            return 0
        total = 0
        for receiver in self.pc.getReceivers():
            for stat in (await receiver.getStats()).values():
                if stat.type == "inbound-rtp":
                    total += stat.packetsReceived
        return total

    async def run(self, config: PeerConfig, target: str, done: asyncio.Event) -> None:
        async with (
            call(config, target, label=CONTROL_LABEL, prepare=self.prepare),
            asyncio.TaskGroup() as tasks,
        ):
            counters = [tasks.create_task(self.count(t)) for t in self.tracks]
            await done.wait()
            for counter in counters:
                counter.cancel()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--signal", required=True)
    parser.add_argument("--target", default="cam")
    parser.add_argument("--viewers", type=int, default=1)
    args = parser.parse_args()
    config = PeerConfig(
        signal_url=args.signal, ice=IceSettings(host_addresses=("127.0.0.1",)), connect_timeout=60
    )
    done = asyncio.Event()
    viewers = [Viewer() for _ in range(args.viewers)]
    loop = asyncio.get_running_loop()
    async with asyncio.TaskGroup() as tasks:
        for viewer in viewers:
            tasks.create_task(viewer.run(config, args.target, done))
        await asyncio.wait_for(asyncio.gather(*(v.first.wait() for v in viewers)), 90)
        print("ready", flush=True)
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            packets = [await v.packets() for v in viewers]
            print(
                json.dumps(
                    {
                        "frames": [v.frames for v in viewers],
                        "bytes": [v.bytes for v in viewers],
                        "packets": packets,
                    }
                ),
                flush=True,
            )
        done.set()


if __name__ == "__main__":
    asyncio.run(main())
