"""A Python room member declines media: a browser member with its camera on
offers audio and video beside the chat channel; the member answers those
lines inactive (so nothing is sent to it to decode into an unread queue)
and the chat channel still opens."""

from __future__ import annotations

import asyncio
import json

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

from rtc_signal.peers import IceSettings, PeerConfig
from rtc_signal.peers.ice import restrict_host_addresses
from rtc_signal.peers.room import RoomMessage, join
from rtc_signal.proto import Command, decode, encode_request, encode_response
from tests.conftest import client, expect_response, recv_frame, run, running_server, within
from tests.test_server_rooms import join as raw_join

ICE = IceSettings(host_addresses=("127.0.0.1",))


def _media_lines(sdp: str) -> dict[str, str]:
    """Each audio/video m-line's kind and its direction attribute."""
    lines: dict[str, str] = {}
    kind = None
    for line in sdp.splitlines():
        if line.startswith("m="):
            kind = line[2:].split()[0]
        elif kind in ("audio", "video") and line[2:] in (
            "sendrecv",
            "sendonly",
            "recvonly",
            "inactive",
        ):
            lines[kind] = line[2:]
    return lines


def test_a_member_answers_a_camera_offer_with_inactive_media_and_chats() -> None:
    """Offer with audio+video (sendrecv) and `chat`: the library member's answer
    has both media lines inactive and the chat channel opens both ways."""

    async def main() -> None:
        async with running_server() as server:
            config = PeerConfig(signal_url=server.url, ice=ICE, connect_timeout=20)
            async with join(config, "media", "py") as room:
                with restrict_host_addresses(("127.0.0.1",)):
                    pc = RTCPeerConnection()  # (no iceServers: nothing beyond loopback)
                    try:
                        pc.addTrack(AudioStreamTrack())
                        pc.addTrack(VideoStreamTrack())
                        channel = pc.createDataChannel("chat")
                        opened = asyncio.Event()
                        channel.on("open", opened.set)
                        async with client(server.url, "/room") as ws:
                            assert await raw_join(ws, "cam", "media") == ("py",)
                            await pc.setLocalDescription(await pc.createOffer())
                            body = json.dumps(
                                {"type": "offer", "sdp": pc.localDescription.sdp}
                            ).encode()
                            await ws.send(encode_request(Command.OFFER, "cam", "py", body))
                            await expect_response(ws, Command.OFFER_RESPONSE, 0)
                            while True:
                                envelope = decode(await recv_frame(ws))
                                if envelope.command is Command.ANSWER:
                                    break
                                if envelope.command.is_request:
                                    await ws.send(
                                        encode_response(envelope.command.response, 0, "ok")
                                    )
                            answer = json.loads(envelope.request.body or b"")
                            await ws.send(encode_response(Command.ANSWER_RESPONSE, 0, "ok"))
                            assert _media_lines(answer["sdp"]) == {
                                "audio": "inactive",
                                "video": "inactive",
                            }
                            await pc.setRemoteDescription(RTCSessionDescription(**answer))
                            await within(opened.wait(), 20)
                            channel.send("hello")
                            async with asyncio.timeout(20):
                                async for event in room:
                                    if event == RoomMessage("cam", "hello"):
                                        break
                    finally:
                        await pc.close()

    run(main(), timeout=60)
