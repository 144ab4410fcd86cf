"""The signaling server's asyncio layer around :class:`signaling.router.Router`.

It only moves data: it accepts WebSocket connections on ``/register`` and
``/offer``, feeds each frame to the router and performs the actions the router
returns. It owns what the router must not know about: sockets, the frame size
limit enforced by websockets, keepalive pings and shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import itertools
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from signaling.router import DEFAULT_MAX_FRAME, Action, ConnId, Forward, Path, Router

log = logging.getLogger(__name__)

#: Frames up to ``max_frame`` get a 413 reply and the connection lives on;
#: websockets refuses to buffer frames beyond this multiple of it (close 1009).
HARD_LIMIT_FACTOR = 4


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 18080
    max_frame: int = DEFAULT_MAX_FRAME
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    #: how long a closing handshake may take at shutdown before the TCP
    #: connection is dropped; keeps SIGTERM-to-exit under 2 s
    close_timeout: float = 1.0


class SignalingServer:
    """A running signaling server. Use as ``async with SignalingServer(cfg) as s``."""

    def __init__(self, config: ServerConfig = ServerConfig()) -> None:
        self.config = config
        self.router = Router(max_frame=config.max_frame)
        self._connections: dict[ConnId, ServerConnection] = {}
        self._ids = itertools.count(1)
        self._server: Server | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with ``port=0``)."""
        assert self._server is not None, "server not started"
        sockname = next(iter(self._server.sockets)).getsockname()
        return int(sockname[1])

    @property
    def url(self) -> str:
        host = self.config.host
        if ":" in host:
            host = f"[{host}]"
        return f"ws://{host}:{self.port}"

    async def start(self) -> None:
        cfg = self.config
        self._server = await serve(
            self._handle,
            cfg.host,
            cfg.port,
            process_request=self._check_path,
            max_size=cfg.max_frame * HARD_LIMIT_FACTOR,
            ping_interval=cfg.ping_interval,
            ping_timeout=cfg.ping_timeout,
            close_timeout=cfg.close_timeout,
            # Signaling frames are small and mostly base64: compression costs
            # CPU and ~100 KiB per connection for zlib state.
            compression=None,
            # Only what routing needs is ever queued; keep idle memory small.
            max_queue=4,
        )
        log.info("listening on %s", self.url)

    async def close(self) -> None:
        """Close every connection with 1001 (going away) and stop listening."""
        if self._server is None:
            return
        self._server.close(close_connections=True)
        await self._server.wait_closed()

    async def serve_forever(self) -> None:
        assert self._server is not None, "server not started"
        await self._server.serve_forever()

    async def __aenter__(self) -> SignalingServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- connections --------------------------------------------------------

    @staticmethod
    def _check_path(connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path not in (Path.REGISTER.value, Path.OFFER.value):
            return connection.respond(
                http.HTTPStatus.NOT_FOUND, "rtc-signal: connect to /register or /offer\n"
            )
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        conn = next(self._ids)
        path = Path(urlsplit(ws.request.path).path if ws.request else "/offer")
        self._connections[conn] = ws
        self.router.connect(conn, path)
        log.debug("conn %s: open on %s from %s", conn, path.value, ws.remote_address)
        try:
            async for frame in ws:
                for action in self.router.receive(conn, frame):
                    await self._perform(action)
        except ConnectionClosed:
            pass
        finally:
            self.router.disconnect(conn)
            del self._connections[conn]
            log.debug("conn %s: closed (%s)", conn, ws.close_code)

    async def _perform(self, action: Action) -> None:
        if isinstance(action, Forward):
            target = self._connections.get(action.target)
            try:
                if target is None:
                    raise ConnectionError("target connection is gone")
                await target.send(action.frame)
            except (ConnectionClosed, ConnectionError):
                for follow_up in self.router.forward_failed(action):
                    await self._perform(follow_up)
                return
            await self._send(action.sender, action.ack)
        else:
            await self._send(action.conn, action.frame)

    async def _send(self, conn: ConnId, frame: bytes | str) -> None:
        ws = self._connections.get(conn)
        if ws is None:
            return
        with contextlib.suppress(ConnectionClosed):
            await ws.send(frame)


async def run_server(config: ServerConfig, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve until SIGINT or SIGTERM, then close every connection with 1001."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with SignalingServer(config) as server:
            if on_ready is not None:
                on_ready(server.url)
            await stop.wait()
            log.info("shutting down: closing %d connections", len(server.router))
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
