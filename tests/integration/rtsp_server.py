"""A minimal RTSP server (RFC 2326) for tests: one H.264 clip, RTP over TCP.

It plays the camera's part: OPTIONS, DESCRIBE (SDP with sprop-parameter-sets),
SETUP (RTP/AVP/TCP interleaved only), PLAY, TEARDOWN; then it sends the
clip's access units in a loop at their frame rate, packetized as RFC 6184
single NAL units and FU-A fragments, interleaved on the RTSP connection
(channel 0). What clients send meanwhile (RTCP, GET_PARAMETER keep-alives) is
read and answered or dropped. Runs its own event loop in a thread; binds
127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import av

from rtc_signal.peers.media import h264

MAX_PAYLOAD = 1200


def _packetize(unit: bytes) -> list[bytes]:
    if len(unit) <= MAX_PAYLOAD:
        return [unit]
    indicator = (unit[0] & 0xE0) | 28  # FU-A
    kind = unit[0] & 0x1F
    body = unit[1:]
    chunks = [body[i : i + MAX_PAYLOAD] for i in range(0, len(body), MAX_PAYLOAD)]
    out = []
    for i, chunk in enumerate(chunks):
        header = kind | (0x80 if i == 0 else 0) | (0x40 if i == len(chunks) - 1 else 0)
        out.append(bytes([indicator, header]) + chunk)
    return out


class RtspServer:
    """``with RtspServer(clip) as url:`` serves ``rtsp://127.0.0.1:PORT/cam``
    (``port``: a given one, to stand for a camera that comes back)."""

    def __init__(self, clip: Path, fps: int = 30, port: int = 0) -> None:
        self.port = port
        with av.open(str(clip)) as container:
            stream = container.streams.video[0]
            units = [bytes(p) for p in container.demux(stream) if p.size]
        self.access_units = [h264.split_annexb(u) for u in units]
        self.sps = next(n for au in self.access_units for n in au if h264.nal_type(n) == 7)
        self.pps = next(n for au in self.access_units for n in au if h264.nal_type(n) == 8)
        self.fps = fps
        self.sessions = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()
        self.url = ""

    def __enter__(self) -> str:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        port = future.result(10)
        self.url = f"rtsp://127.0.0.1:{port}/cam"
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> int:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._clients):
            task.cancel()
        await asyncio.gather(*self._clients, return_exceptions=True)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        streamer: asyncio.Task[None] | None = None
        try:
            while True:
                first = await reader.readexactly(1)
                if first == b"$":  # interleaved data from the client (RTCP): drop
                    _, size = struct.unpack("!BH", await reader.readexactly(3))
                    await reader.readexactly(size)
                    continue
                head = first + await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, uri, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                if int(headers.get("content-length", "0")):
                    await reader.readexactly(int(headers["content-length"]))
                cseq = headers.get("cseq", "0")
                reply = self._reply(method, uri, headers)
                writer.write(f"RTSP/1.0 {reply[0]}\r\nCSeq: {cseq}\r\n".encode() + reply[1])
                await writer.drain()
                if method == "PLAY" and streamer is None:
                    self.sessions += 1
                    streamer = asyncio.create_task(self._stream(writer))
                elif method == "TEARDOWN":
                    return
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            return
        finally:
            if streamer is not None:
                streamer.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await streamer
            writer.close()
            self._clients.discard(task)

    def _reply(self, method: str, uri: str, headers: dict[str, str]) -> tuple[str, bytes]:
        session = b"Session: 4242;timeout=60\r\n"
        if method == "OPTIONS":
            return (
                "200 OK",
                b"Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER\r\n\r\n",
            )
        if method == "DESCRIBE":
            sprop = ",".join(base64.b64encode(u).decode() for u in (self.sps, self.pps))
            profile = self.sps[1:4].hex()
            sdp = (
                "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=test camera\r\nc=IN IP4 0.0.0.0\r\n"
                "t=0 0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
                f"a=fmtp:96 packetization-mode=1;profile-level-id={profile};"
                f"sprop-parameter-sets={sprop}\r\na=control:trackID=0\r\n"
            ).encode()
            base = uri.rstrip("/") + "/"
            return "200 OK", (
                f"Content-Base: {base}\r\nContent-Type: application/sdp\r\n"
                f"Content-Length: {len(sdp)}\r\n\r\n"
            ).encode() + sdp
        if method == "SETUP":
            transport = headers.get("transport", "")
            if "TCP" not in transport.upper():
                return "461 Unsupported Transport", b"\r\n"
            return "200 OK", session + b"Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n"
        if method in ("PLAY", "GET_PARAMETER", "TEARDOWN"):
            return "200 OK", session + b"\r\n"
        return "405 Method Not Allowed", b"\r\n"

    def _rtp(self) -> Iterator[tuple[bytes, bool]]:
        for units in self.access_units:
            payloads = [p for u in units if h264.nal_type(u) != h264.NAL_AUD for p in _packetize(u)]
            for i, payload in enumerate(payloads):
                yield payload, i == len(payloads) - 1

    async def _stream(self, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        seq, ssrc = random.randrange(1 << 16), random.randrange(1 << 32)
        timestamp = random.randrange(1 << 32)
        start = loop.time()
        frame = 0
        while True:
            for payload, last in self._rtp():
                header = struct.pack(
                    "!BBHII", 0x80, (0x80 if last else 0) | 96, seq, timestamp, ssrc
                )
                packet = header + payload
                writer.write(b"$\x00" + struct.pack("!H", len(packet)) + packet)
                seq = (seq + 1) & 0xFFFF
                if last:
                    frame += 1
                    timestamp = (timestamp + 90000 // self.fps) & 0xFFFFFFFF
                    await writer.drain()
                    await asyncio.sleep(max(0.0, start + frame / self.fps - loop.time()))
