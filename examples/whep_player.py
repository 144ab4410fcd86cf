"""A WHEP player: watch a registered peer through rtc-signal's WHEP endpoint.

    rtc-signal serve &
    rtc-peer answer --id cam --video testsrc --host-address 127.0.0.1 &
    python examples/whep_player.py http://127.0.0.1:18080/whep/cam --host-address 127.0.0.1

It makes a receive-only SDP offer (video, and audio with ``--audio``), POSTs
it (``Content-Type: application/sdp``), applies the answer from the 201
response, counts the video frames it decodes for ``--seconds``, then ends the
session with DELETE on its ``Location``. Exit status 0 only if frames came.

``--write-offer FILE`` only writes such an offer to FILE (``-``: stdout) and
exits, for trying the endpoint with curl. That offer's ICE credentials and
ports belong to a connection that ends with this script, so posting it
exercises the endpoint (201 and the answer SDP), but no media can flow: to
watch, let this script (or a browser's WHEP player) do the whole exchange.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription

from rtc_signal.peers import IceSettings, restrict_host_addresses

#: seconds for each HTTP request and for the first frame
TIMEOUT = 20.0


@contextmanager
def player_connection(host_addresses: tuple[str, ...] | None) -> Iterator[RTCPeerConnection]:
    """A peer connection with no STUN/TURN server (loopback or LAN only)."""
    with restrict_host_addresses(host_addresses):
        yield RTCPeerConnection(IceSettings().rtc_configuration())


async def make_offer(pc: RTCPeerConnection, audio: bool) -> str:
    """A receive-only offer with its candidates (aiortc gathers them here)."""
    pc.addTransceiver("video", direction="recvonly")
    if audio:
        pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    return str(pc.localDescription.sdp)


def http(
    method: str, url: str, body: bytes | None = None, token: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One blocking HTTP request: (status, headers, body); 4xx/5xx included."""
    headers = {"Content-Type": "application/sdp"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()


async def count_frames(track: MediaStreamTrack, seconds: float) -> int:
    """Video frames decoded from ``track`` within ``seconds`` (after the first)."""
    await asyncio.wait_for(track.recv(), TIMEOUT)
    frames = 1
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while (left := end - loop.time()) > 0:
        try:
            await asyncio.wait_for(track.recv(), left)
        except TimeoutError:
            break
        frames += 1
    return frames


async def watch(args: argparse.Namespace) -> int:
    with player_connection(args.host_address) as pc:
        try:
            video: asyncio.Queue[MediaStreamTrack] = asyncio.Queue()
            pc.on("track", lambda track: video.put_nowait(track) if track.kind == "video" else None)
            offer = await make_offer(pc, args.audio)
            status, headers, body = await asyncio.to_thread(
                http, "POST", args.url, offer.encode(), args.token
            )
            if status != 201:
                reason = body.decode(errors="replace").strip()
                print(f"whep: POST {args.url}: HTTP {status}: {reason}", file=sys.stderr)
                return 1
            location = urllib.parse.urljoin(args.url, headers.get("Location", ""))
            print(f"whep: session {location}", file=sys.stderr)
            try:
                await pc.setRemoteDescription(RTCSessionDescription(body.decode(), "answer"))
                track = await asyncio.wait_for(video.get(), TIMEOUT)
                frames = await count_frames(track, args.seconds)
            finally:
                status, _, _ = await asyncio.to_thread(http, "DELETE", location, None, args.token)
                print(f"whep: DELETE {location}: HTTP {status}", file=sys.stderr)
        finally:
            await pc.close()
    print(f"frames: {frames}")
    return 0 if frames > 0 else 1


async def offer_only(host_addresses: tuple[str, ...] | None, audio: bool) -> str:
    """An offer of a connection closed right after (for --write-offer)."""
    with player_connection(host_addresses) as pc:
        try:
            return await make_offer(pc, audio)
        finally:
            await pc.close()


def write_offer(args: argparse.Namespace) -> int:
    offer = asyncio.run(offer_only(args.host_address, args.audio))
    if args.write_offer == "-":
        sys.stdout.write(offer)
    else:
        with open(args.write_offer, "w", newline="") as out:  # SDP lines end with CRLF
            out.write(offer)
        print(f"whep: offer written to {args.write_offer}", file=sys.stderr)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", nargs="?", help="the WHEP URL, http://host:port/whep/<peer-id>")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long to watch")
    parser.add_argument("--audio", action="store_true", help="ask for audio too")
    parser.add_argument("--token", help="token for a server run with --secret")
    parser.add_argument("--host-address", action="append", help="host candidate address")
    parser.add_argument("--write-offer", metavar="FILE", help="only write an offer to FILE")
    args = parser.parse_args()
    args.host_address = tuple(args.host_address) if args.host_address else None
    if args.write_offer is None and args.url is None:
        parser.error("give the WHEP URL (or --write-offer FILE)")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        return write_offer(args) if args.write_offer else asyncio.run(watch(args))
    except (OSError, TimeoutError, ValueError) as exc:
        print(f"whep: error: {exc!r}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
