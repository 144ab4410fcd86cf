"""WHEP: POST /whep/<peer-id> turns an SDP offer into an Offer to that peer."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
from websockets.asyncio.client import ClientConnection

from rtc_signal import proto
from rtc_signal.peers import IceSettings, restrict_host_addresses
from rtc_signal.proto import tokens
from rtc_signal.signaling.whep import candidate_lines, check_offer, parse_path, splice_candidates
from tests.conftest import client, recv_envelope, register, run, running_server, within
from tests.httpclient import HttpResponse, http_request
from tests.integration.test_go_interop import split_candidates

SDP_HEADERS = {"Content-Type": "application/sdp"}
OFFER_SDP = b"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"


# -- pure parts ----------------------------------------------------------------


def test_paths_name_a_peer_and_optionally_a_session() -> None:
    """/whep/<peer> and /whep/<peer>/<resource>; anything else is not WHEP."""
    assert parse_path("/whep/cam") == ("cam", None)
    assert parse_path("/whep/my%20cam/abc") == ("my cam", "abc")
    for bad in ("/whep/", "/whep//x", "/whep/a/b/c", "/whepx/a", "/whep/a/"):
        assert parse_path(bad) is None, bad


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"", "empty"),
        (b"\xff\xfe", "UTF-8"),
        (b"hello", "v=0"),
        (b"v=0\r\ns=-\r\n", "media section"),
    ],
)
def test_offers_that_are_not_sdp_are_refused_with_the_reason(body: bytes, why: str) -> None:
    """check_offer says what is wrong with a body that is not an SDP offer."""
    with pytest.raises(ValueError, match=why):
        check_offer(body)


def test_trickled_candidates_go_into_the_first_media_section() -> None:
    """splice_candidates adds a=candidate lines and end-of-candidates to m-line 0."""
    sdp = "v=0\r\nm=audio 9 X 0\r\na=mid:0\r\nm=video 9 X 96\r\na=mid:1\r\n"
    spliced = splice_candidates(sdp, ["candidate:1 1 udp 5 127.0.0.1 9 typ host"])
    assert spliced == (
        "v=0\r\nm=audio 9 X 0\r\na=mid:0\r\na=candidate:1 1 udp 5 127.0.0.1 9 typ host\r\n"
        "a=end-of-candidates\r\nm=video 9 X 96\r\na=mid:1\r\n"
    )


def test_sdpfrag_candidates_are_extracted() -> None:
    """candidate_lines reads RFC 8840 fragments (other lines ignored)."""
    frag = "a=ice-ufrag:x\r\nm=audio 9 X 0\r\na=candidate:1 1 udp 1 ::1 5 typ host\r\n"
    assert candidate_lines(frag) == ["candidate:1 1 udp 1 ::1 5 typ host"]


# -- against the server: errors ---------------------------------------------------


async def post(url: str, peer: str, body: bytes = OFFER_SDP, **headers: str) -> HttpResponse:
    fields = {**SDP_HEADERS, **headers}
    return await http_request(url, "POST", f"/whep/{peer}", fields, body, timeout=15)


def test_unknown_peer_gets_404_and_bad_bodies_get_4xx() -> None:
    """Unknown peer 404; wrong type 415; not SDP 400; GET 405; OPTIONS 204 with CORS."""

    async def main() -> None:
        async with running_server() as server:
            url = server.url
            response = await post(url, "nobody")
            assert response.status == 404 and b"nobody" in response.body
            async with client(url, "/register") as ws:
                await register(ws, "cam")
                response = await post(url, "cam", **{"Content-Type": "text/plain"})
                assert response.status == 415 and b"application/sdp" in response.body
                response = await post(url, "cam", b"not sdp")
                assert response.status == 400 and b"v=0" in response.body
                response = await post(url, "cam", b"")
                assert response.status == 400
                response = await post(url, "cam", b"v=0\r\n" + b"a=x\r\n" * 20_000)
                assert response.status == 413
                response = await http_request(url, "GET", "/whep/cam")
                assert response.status == 405 and "POST" in response.headers["allow"]
                response = await http_request(url, "OPTIONS", "/whep/cam")
                assert response.status == 204
                assert "POST" in response.headers["access-control-allow-methods"]
                assert response.headers["accept-post"] == "application/sdp"
                response = await http_request(url, "DELETE", "/whep/cam/unknown")
                assert response.status == 404
                # the peer got none of these
                with pytest.raises(TimeoutError):
                    await recv_envelope(ws, timeout=0.3)
                # and is still registered and routable
                assert server.router.answer_peers() == ["cam"]

    run(main())


def test_a_peer_that_never_answers_gives_504_and_the_session_is_dropped() -> None:
    """The offer reaches the peer as command 3 from whep-…; no answer: 504, nothing left."""

    async def main() -> None:
        async with (
            running_server(whep_timeout=0.5) as server,
            client(server.url, "/register") as ws,
        ):
            await register(ws, "silent")
            pending = asyncio.ensure_future(post(server.url, "silent"))
            envelope = await recv_envelope(ws)
            assert envelope.command is proto.Command.OFFER
            assert envelope.request.source.startswith("whep-")
            description = proto.decode_description(
                envelope.request.body, proto.Command.OFFER, "offer"
            )
            assert description.sdp.encode() == OFFER_SDP
            response = await within(pending, 10)
            assert response.status == 504 and b"did not answer" in response.body
            assert server.router.offer_peers() == []
            assert server.whep is not None and not server.whep.sessions

    run(main())


def test_with_a_secret_a_token_is_required_and_names_the_viewer() -> None:
    """--secret: no token 401, forged 401, valid token's ID is the offer's source."""
    secret = tokens.check_secret("s" * 32)

    async def main() -> None:
        async with running_server(secret=secret, whep_timeout=0.5) as server:
            cam_token = tokens.mint(secret, "cam", int(time.time()) + 60)
            viewer = tokens.mint(secret, "viewer-7", int(time.time()) + 60)
            async with client(server.url, f"/register?token={cam_token}") as ws:
                await register(ws, "cam")
                assert (await post(server.url, "cam")).status == 401
                forged = viewer[:-4] + ("AAAA" if not viewer.endswith("AAAA") else "BBBB")
                response = await post(server.url, "cam", Authorization=f"Bearer {forged}")
                assert response.status == 401
                pending = asyncio.ensure_future(
                    post(server.url, "cam", Authorization=f"Bearer {viewer}")
                )
                envelope = await recv_envelope(ws)
                assert envelope.request.source == "viewer-7"
                assert (await within(pending, 10)).status == 504
                # a room token (rooms, /room only) is no WHEP viewer's token
                in_room = tokens.mint(secret, "viewer-8", int(time.time()) + 60, room="r1")
                response = await post(server.url, "cam", Authorization=f"Bearer {in_room}")
                assert response.status == 403 and b"room token" in response.body

    run(main())


# -- against the server: a real media session ---------------------------------------


@contextlib.asynccontextmanager
async def camera_peer(url: str, peer_id: str, trickle: bool) -> AsyncIterator[asyncio.Task[None]]:
    """A registered answer peer that answers one offer with a video track
    (aiortc's generated frames); with ``trickle`` it sends its candidates as
    command 4 after an answer without them, as browsers do."""
    registered: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def serve() -> None:
        with restrict_host_addresses(["127.0.0.1"]):
            pc = RTCPeerConnection(IceSettings().rtc_configuration())
            async with client(url, "/register") as ws:
                await register(ws, peer_id)
                registered.set_result(None)
                try:
                    await answer_one(ws, pc, peer_id, trickle)
                    await asyncio.sleep(30)  # keep the media flowing until cancelled
                finally:
                    await pc.close()

    task = asyncio.ensure_future(serve())
    await within(registered, 10)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def answer_one(ws: ClientConnection, pc: RTCPeerConnection, me: str, trickle: bool) -> None:
    envelope = await recv_envelope(ws, timeout=10)
    await ws.send(proto.encode_response(proto.Command.OFFER_RESPONSE, 0, "ok"))
    caller = envelope.request.source
    offer = proto.decode_description(envelope.request.body, proto.Command.OFFER, "offer")
    await pc.setRemoteDescription(RTCSessionDescription(offer.sdp, offer.type))
    pc.addTrack(VideoStreamTrack())
    await pc.setLocalDescription(await pc.createAnswer())
    sdp, candidates = split_candidates(pc.localDescription.sdp)
    if not trickle:
        sdp = pc.localDescription.sdp
    body = proto.SessionDescription(type="answer", sdp=sdp).to_json()
    await ws.send(proto.encode_request(proto.Command.ANSWER, me, caller, body))
    if trickle:
        for line in candidates:
            await ws.send(proto.encode_request(proto.Command.CANDIDATE, me, caller, line.encode()))


async def watch(url: str, peer_id: str) -> tuple[HttpResponse, int]:
    """A WHEP player (aiortc, recvonly video): POST, play, return (201 response,
    width of the first decoded frame)."""
    with restrict_host_addresses(["127.0.0.1"]):
        pc = RTCPeerConnection(IceSettings().rtc_configuration())
        try:
            pc.addTransceiver("video", direction="recvonly")
            tracks: asyncio.Queue[object] = asyncio.Queue()
            pc.on("track", tracks.put_nowait)
            await pc.setLocalDescription(await pc.createOffer())
            response = await post(url, peer_id, pc.localDescription.sdp.encode())
            assert response.status == 201, response.body
            await pc.setRemoteDescription(RTCSessionDescription(response.body.decode(), "answer"))
            track = await within(tracks.get(), 15)
            frame = await within(track.recv(), 15)  # type: ignore[attr-defined]
            return response, int(frame.width)
        finally:
            await pc.close()


@pytest.mark.parametrize("trickle", [False, True], ids=["candidates-in-answer", "trickled"])
def test_whep_player_receives_video_from_a_registered_peer_and_deletes(trickle: bool) -> None:
    """POST → 201 with the answer SDP and a Location; video plays; DELETE → 200, then 404."""

    async def main() -> None:
        async with running_server() as server, camera_peer(server.url, "cam", trickle):
            response, width = await watch(server.url, "cam")
            assert width > 0
            assert response.headers["content-type"] == "application/sdp"
            assert "a=candidate:" in response.body.decode()
            location = response.headers["location"]
            assert location.startswith("/whep/cam/")
            assert response.headers["access-control-expose-headers"].startswith("Location")
            assert len(server.router.offer_peers()) == 1
            deleted = await http_request(server.url, "DELETE", location)
            assert deleted.status == 200
            assert server.router.offer_peers() == []
            again = await http_request(server.url, "DELETE", location)
            assert again.status == 404

    run(main(), timeout=60)


def test_no_whep_turns_the_endpoint_off() -> None:
    """ServerConfig(whep=False): /whep/... is an unknown path (404)."""

    async def main() -> None:
        async with running_server(whep=False) as server, client(server.url, "/register") as ws:
            await register(ws, "cam")
            response = await post(server.url, "cam")
            assert response.status in (404, 405)

    run(main())


def test_players_beyond_the_per_peer_bound_get_429_and_the_canary_peer_is_unaffected() -> None:
    """WHEP sessions with one answer peer are bounded (MAX_SESSIONS_PER_PEER, then 429 with
    Retry-After); another peer's player still gets its offer through; ending a session
    frees its slot."""
    from rtc_signal.signaling.whep import MAX_SESSIONS_PER_PEER

    async def main() -> None:
        async with (
            running_server(whep_timeout=30) as server,
            client(server.url, "/register") as victim,
            client(server.url, "/register") as canary,
        ):
            await register(victim, "victim")
            await register(canary, "canary")
            pending = [
                asyncio.ensure_future(post(server.url, "victim"))
                for _ in range(MAX_SESSIONS_PER_PEER)
            ]
            for _ in range(MAX_SESSIONS_PER_PEER):  # every offer reached the victim
                assert (await recv_envelope(victim)).command is proto.Command.OFFER
            over = await post(server.url, "victim")
            assert over.status == 429 and b"WHEP sessions with this peer" in over.body
            assert over.headers.get("retry-after") == "5"
            other = asyncio.ensure_future(post(server.url, "canary"))
            assert (await recv_envelope(canary)).command is proto.Command.OFFER
            assert server.whep is not None
            server.whep.end(next(iter(server.whep.sessions.values())))
            again = asyncio.ensure_future(post(server.url, "victim"))
            assert (await recv_envelope(victim)).command is proto.Command.OFFER
            for task in [*pending, other, again]:
                task.cancel()
            await asyncio.gather(*pending, other, again, return_exceptions=True)

    run(main())
