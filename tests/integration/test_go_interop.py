"""Interop with the Go reference demo.

The golden session (a real recording of the Go demo) is the contract:
- our peers are driven by its recorded *server* frames (a scripted server
  plays the Go server's part, byte for byte) and must answer with the frames
  the Go peers sent;
- peers that behave like the Go ones on the wire (SDP without candidates,
  candidates trickled afterwards as bare ``candidate:`` lines, responses sent
  back to the server) must connect to our peers through our server.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve

from rtc_signal import proto
from rtc_signal.peers import IceSettings, restrict_host_addresses
from tests.integration.procs import (
    LOOPBACK,
    PEER,
    run_peer,
    server,
    start_peer,
    wait,
    wait_registered,
)

# A copy of the shared docs' golden/go-demo-session.jsonl, so CI needs no more.
GOLDEN_FILE = Path(__file__).resolve().parents[1] / "golden" / "go-demo-session.jsonl"


def golden(path: str, direction: str) -> list[bytes]:
    frames = []
    for line in GOLDEN_FILE.read_text().splitlines():
        record = json.loads(line)
        if record["path"] == path and record["dir"] == direction:
            frames.append(record["frame"].encode())
    return frames


@asynccontextmanager
async def scripted_server(
    script: Callable[[ServerConnection], Awaitable[None]],
) -> AsyncIterator[tuple[str, asyncio.Future[None]]]:
    """A stand-in for the Go signaling server that plays ``script`` per connection."""
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def handler(ws: ServerConnection) -> None:
        try:
            await script(ws)
            if not done.done():
                done.set_result(None)
        except BaseException as exc:  # reported to the test, not swallowed
            if not done.done():
                done.set_exception(exc)
            raise

    async with serve(handler, "127.0.0.1", 0) as srv:
        port = next(iter(srv.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}", done


async def recv(ws: ServerConnection | ClientConnection, timeout: float = 10) -> bytes:
    frame = await asyncio.wait_for(ws.recv(), timeout)
    return frame.encode() if isinstance(frame, str) else frame


def run_in_thread(coro: Awaitable[None]) -> threading.Thread:
    thread = threading.Thread(target=asyncio.run, args=(coro,), daemon=True)
    thread.start()
    return thread


def test_answer_peer_speaks_the_go_protocol_to_the_recorded_server() -> None:
    """Fed the Go server's recorded frames, our answer peer sends the Go answer
    peer's frames: the same Init and acks byte for byte, and an answer to
    offer-peer-1; it applies the trickled Go candidate (nobody listens there, so
    ICE then times out and the peer says so)."""
    to_client = golden("/register", "server->client")  # 101, offer, 102, 104, candidate
    from_client = golden("/register", "client->server")  # init, 103, answer, 4, 104
    init_ok, offer, answer_ok, _, candidate = to_client
    seen: dict[str, bytes] = {}

    async def script(ws: ServerConnection) -> None:
        seen["init"] = await recv(ws)
        await ws.send(init_ok)
        await ws.send(offer)
        seen["offer_ack"] = await recv(ws)
        seen["answer"] = await recv(ws)
        await ws.send(answer_ok)
        await ws.send(candidate)
        seen["candidate_ack"] = await recv(ws)

    async def main() -> None:
        async with scripted_server(script) as (url, done):
            proc = await asyncio.create_subprocess_exec(
                *PEER,
                "answer",
                "--id",
                "answer-peer-1",
                "--signal",
                url,
                *LOOPBACK,
                "--count",
                "1",
                "--connect-timeout",
                "2",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            try:
                await asyncio.wait_for(done, 20)
                _, err = await asyncio.wait_for(proc.communicate(), 20)
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            seen["stderr"] = err
            seen["rc"] = bytes([proc.returncode or 0])

    asyncio.run(main())
    assert seen["init"] == from_client[0]
    assert seen["offer_ack"] == from_client[1]
    assert seen["candidate_ack"] == from_client[4]
    answer = proto.decode(seen["answer"])
    assert answer.command is proto.Command.ANSWER
    assert (answer.request.source, answer.request.target) == ("answer-peer-1", "offer-peer-1")
    sdp = proto.decode_description(answer.request.body, proto.Command.ANSWER, "answer").sdp
    assert "a=candidate:" in sdp and " 127.0.0.1 " in sdp
    assert seen["rc"] == b"\x01"
    assert b"rtc-peer: error: no data channel from 'offer-peer-1' within 2 s" in seen["stderr"]


def test_offer_peer_reports_the_go_servers_unknown_target_reply() -> None:
    """The Go server answers an unknown target with 103 code 1: our offer peer
    exits 1 with its message."""
    refusal = golden("/offer", "server->client")[-1]
    seen: dict[str, bytes] = {}

    async def script(ws: ServerConnection) -> None:
        seen["offer"] = await recv(ws)
        await ws.send(refusal)
        await asyncio.sleep(1)

    async def main() -> None:
        async with scripted_server(script) as (url, done):
            result = await asyncio.to_thread(
                run_peer,
                "offer",
                "--target",
                "nobody",
                "--id",
                "offer-peer-2",
                "--signal",
                url,
                *LOOPBACK,
            )
            await asyncio.wait_for(done, 10)
        seen["stderr"] = result.stderr.encode()
        seen["rc"] = bytes([result.returncode])

    asyncio.run(main())
    offer = proto.decode(seen["offer"])
    assert offer.command is proto.Command.OFFER
    assert (offer.request.source, offer.request.target) == ("offer-peer-2", "nobody")
    assert seen["rc"] == b"\x01"
    assert b"file does not exist (code 1)" in seen["stderr"]


def split_candidates(sdp: str) -> tuple[str, list[str]]:
    """Make an SDP look like pion's: candidates removed, returned as bare lines."""
    kept, candidates = [], []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            candidates.append(line[2:])
        elif line != "a=end-of-candidates":
            kept.append(line)
    return "\r\n".join(kept) + "\r\n", candidates


async def trickle(ws: ClientConnection, source: str, target: str, lines: list[str]) -> None:
    """Send each candidate line as its own Candidate request, as pion does."""
    for line in lines:
        await ws.send(proto.encode_request(proto.Command.CANDIDATE, source, target, line.encode()))


async def go_style_peer_exchange(
    pc: RTCPeerConnection, channel_ready: asyncio.Future[object], greeting: str
) -> str:
    """Once the channel is open, send ``greeting`` and return the first message."""
    channel: object = await asyncio.wait_for(channel_ready, 20)
    inbox: asyncio.Queue[str] = asyncio.Queue()
    channel.on("message", inbox.put_nowait)  # type: ignore[attr-defined]
    channel.send(greeting)  # type: ignore[attr-defined]
    return await asyncio.wait_for(inbox.get(), 20)


@pytest.mark.parametrize(
    "candidates_first", [False, True], ids=["answer-first", "candidates-first"]
)
def test_go_style_trickling_answer_peer_connects_with_our_offer_peer(
    candidates_first: bool,
) -> None:
    """A peer answering like pion (no candidates in the SDP, each trickled as
    command 4, after its answer or even before it) connects to `rtc-peer offer`
    through our server."""
    with server() as url:
        got: dict[str, str] = {}
        registered = threading.Event()

        async def go_answer_peer() -> None:
            with restrict_host_addresses(["127.0.0.1"]):
                pc = RTCPeerConnection(IceSettings().rtc_configuration())
                opened: asyncio.Future[object] = asyncio.get_running_loop().create_future()

                def on_channel(ch: object) -> None:
                    ch.on("open", lambda: opened.done() or opened.set_result(ch))  # type: ignore[attr-defined]
                    if ch.readyState == "open" and not opened.done():  # type: ignore[attr-defined]
                        opened.set_result(ch)

                pc.on("datachannel", on_channel)
                async with connect(url + "/register") as ws:
                    await ws.send(proto.encode_request(proto.Command.INIT, "go-answer", ""))
                    assert proto.decode(await recv(ws)).response.ok
                    registered.set()
                    offer = proto.decode(await recv(ws, 30))
                    caller = offer.request.source
                    await ws.send(proto.encode_response(proto.Command.OFFER_RESPONSE, 0, "ok"))
                    desc = proto.decode_description(offer.request.body, offer.command, "offer")
                    # candidates first: it never checks our candidates, so ICE
                    # only works if our peer applies the ones that came early
                    sdp = split_candidates(desc.sdp)[0] if candidates_first else desc.sdp
                    await pc.setRemoteDescription(RTCSessionDescription(sdp, desc.type))
                    await pc.setLocalDescription(await pc.createAnswer())
                    bare_sdp, candidates = split_candidates(pc.localDescription.sdp)
                    body = proto.SessionDescription(type="answer", sdp=bare_sdp).to_json()
                    if candidates_first:
                        await trickle(ws, "go-answer", caller, candidates)
                    await ws.send(
                        proto.encode_request(proto.Command.ANSWER, "go-answer", caller, body)
                    )
                    if not candidates_first:
                        await trickle(ws, "go-answer", caller, candidates)
                    exchange = asyncio.ensure_future(go_style_peer_exchange(pc, opened, "answer-1"))
                    try:
                        got["message"] = await exchange
                    finally:
                        await pc.close()

        thread = run_in_thread(go_answer_peer())
        assert registered.wait(10), "the Go-style answer peer did not register"
        result = run_peer(
            "offer",
            "--target",
            "go-answer",
            "--signal",
            url,
            *LOOPBACK,
            "--interval",
            "0.2",
            "--count",
            "1",
            "--connect-timeout",
            "15",
        )
        thread.join(30)
    assert result.returncode == 0, result.stderr
    assert result.lines("recv ") == ["recv answer-1"]
    assert got.get("message") == "offer-1"


@pytest.mark.parametrize("candidates_first", [False, True], ids=["offer-first", "candidates-first"])
def test_go_style_trickling_offer_peer_connects_with_our_answer_peer(
    candidates_first: bool,
) -> None:
    """A peer offering like pion (no candidates in the offer; candidates trickled
    after the answer arrives, or before the offer itself) connects to
    `rtc-peer answer` through our server."""
    with server() as url:
        answer = start_peer(
            "answer",
            "--id",
            "ours",
            "--signal",
            url,
            *LOOPBACK,
            "--interval",
            "0.2",
            "--count",
            "1",
            "--connect-timeout",
            "15",
        )
        wait_registered(answer)
        got: dict[str, str] = {}

        async def go_offer_peer() -> None:
            with restrict_host_addresses(["127.0.0.1"]):
                pc = RTCPeerConnection(IceSettings().rtc_configuration())
                channel = pc.createDataChannel("data")
                opened: asyncio.Future[object] = asyncio.get_running_loop().create_future()
                channel.on("open", lambda: opened.done() or opened.set_result(channel))
                await pc.setLocalDescription(await pc.createOffer())
                bare_sdp, candidates = split_candidates(pc.localDescription.sdp)
                body = proto.SessionDescription(type="offer", sdp=bare_sdp).to_json()
                async with connect(url + "/offer") as ws:
                    if candidates_first:
                        await trickle(ws, "offer-peer-1", "ours", candidates)
                        for _ in candidates:
                            assert proto.decode(await recv(ws)).response.ok
                    await ws.send(
                        proto.encode_request(proto.Command.OFFER, "offer-peer-1", "ours", body)
                    )
                    assert proto.decode(await recv(ws)).response.ok
                    answer_frame = proto.decode(await recv(ws, 20))
                    assert answer_frame.command is proto.Command.ANSWER
                    await ws.send(proto.encode_response(proto.Command.ANSWER_RESPONSE, 0, "ok"))
                    desc = proto.decode_description(
                        answer_frame.request.body, proto.Command.ANSWER, "answer"
                    )
                    # candidates first: it never checks our candidates, so ICE
                    # only works if our peer applies the ones that came early
                    sdp = split_candidates(desc.sdp)[0] if candidates_first else desc.sdp
                    await pc.setRemoteDescription(RTCSessionDescription(sdp, desc.type))
                    if not candidates_first:
                        await trickle(ws, "offer-peer-1", "ours", candidates)
                    try:
                        got["message"] = await go_style_peer_exchange(pc, opened, "offer-1")
                    finally:
                        await pc.close()

        thread = run_in_thread(go_offer_peer())
        answered = wait(answer, 40)
        thread.join(30)
    assert answered.returncode == 0, answered.stderr
    assert answered.lines("recv ") == ["recv offer-1"]
    assert got.get("message") == "answer-1"
