"""The signaling server's asyncio layer around :class:`signaling.router.Router`.

It only moves data: it accepts WebSocket connections on ``/register`` and
``/offer``, feeds each frame to the router and performs the actions the router
returns. It owns what the router must not know about: sockets, the frame size
limit enforced by websockets, keepalive pings, flow control and shutdown.

websockets does the HTTP handshake, control frames, the closing handshake,
and judges every frame it would reject (size limit, protocol errors). Past the
handshake, data frames take a shorter path than websockets' ``async for
message in ws`` (``benchmarks/README.md`` has the measurements behind each
choice):

- unfragmented data frames are cut out of the byte stream here and routed at
  once, without websockets' generator-based parser, a queue and a task
  wake-up per message; replies and forwards are framed here too;
- what is written while handling one read is sent with one ``write`` per
  connection, not one per frame (a loopback ``send`` costs ~10 us);
- one keepalive task pings every connection, instead of one task each, and
  the handshake's headers are freed once the connection is open.

Flow control is the one of ``await ws.send()``: a forward whose target's write
buffer is over its high-water mark holds the sender's acknowledgement and its
next frames until the target drains; frames that keep arriving meanwhile are
queued, and reading pauses once more than ``max_queue`` are waiting.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import http
import itertools
import logging
import os
import signal
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover (websockets built without its C extension)
    from websockets.utils import apply_mask

from signaling.router import DEFAULT_MAX_FRAME, Action, ConnId, Forward, Path, Router, Send
from signaling.router import Frame as Data

log = logging.getLogger(__name__)

#: Frames up to ``max_frame`` get a 413 reply and the connection lives on;
#: websockets refuses to buffer frames beyond this multiple of it (close 1009).
HARD_LIMIT_FACTOR = 4

#: Frames queued for a sender blocked by a full target before reading pauses
#: (websockets' ``max_queue``).
MAX_QUEUE = 4

#: The keepalive task yields to the event loop after pinging this many peers.
PING_BATCH = 256

_OPEN = State.OPEN
_CONTROL = frozenset((Opcode.CLOSE, Opcode.PING, Opcode.PONG))
#: headers of unmasked text and binary frames of up to 125 bytes
_HEADERS = {op: [bytes((op, n)) for n in range(126)] for op in (0x81, 0x82)}
OP_CONT, OP_TEXT, OP_BINARY, OP_PONG = Opcode.CONT, Opcode.TEXT, Opcode.BINARY, Opcode.PONG
#: tasks that must not be garbage-collected while they run
_TASKS: set[asyncio.Task[None]] = set()


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


class _Connection(ServerConnection):
    """A websockets connection whose data frames go straight to the router.

    websockets handles the handshake and control frames (ping, pong, close)
    as usual; data frames are handed to :meth:`SignalingServer._receive` from
    ``data_received`` and replies are buffered until
    :meth:`SignalingServer._flush`.
    """

    # Slots, not instance attributes: websockets already sets 27, and past 30
    # CPython stops sharing the keys of instance dicts (+1.3 KiB each).
    __slots__ = (
        "backlog",
        "blocked",
        "conn_id",
        "dirty",
        "failed",
        "fragments",
        "fragments_text",
        "frame_limit",
        "idle",
        "out",
        "owner",
        "partial",
        "ping_payload",
        "ping_sent",
        "reading_paused",
        "slow",
        "waiting_for",
        "waiting_on",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.owner: SignalingServer | None = None
        self.conn_id: ConnId = 0
        #: queued for :meth:`SignalingServer._flush`
        self.dirty = False
        #: frames written outside the protocol, sent before its own output
        self.out: list[bytes] | None = None
        #: frames not routed yet, and actions waiting for ``waiting_on`` to drain
        self.backlog: collections.deque[Data | Action] | None = None
        #: the connection whose full write buffer holds our next action
        self.waiting_on: _Connection | None = None
        #: the forward written to ``waiting_on`` whose ack is held (None: a reply)
        self.waiting_for: Forward | None = None
        #: senders whose progress waits for our write buffer to drain
        self.blocked: list[_Connection] | None = None
        self.reading_paused = False
        #: set once the connection is failed: its data frames are ignored
        self.failed = False
        #: resolved when the backlog is empty and nothing is held (see _handle)
        self.idle: asyncio.Future[None] | None = None
        #: fragments of a message in progress, and whether it is text
        self.fragments: list[bytes] | None = None
        self.fragments_text = False
        #: payload of the keepalive ping awaiting its pong, and when it was sent
        self.ping_payload: bytes | None = None
        self.ping_sent = 0.0
        #: websockets parses every incoming byte of this connection (see _parse)
        self.slow = False
        #: the start of an incomplete frame (see _parse)
        self.partial = b""
        #: the largest frame websockets accepts (its ``max_size``)
        self.frame_limit = 0

    # -- incoming ------------------------------------------------------------

    def process_event(self, event: Any) -> None:
        if self.request is None or not isinstance(event, Frame):
            super().process_event(event)  # the handshake request
            return
        opcode = event.opcode
        if opcode is OP_BINARY and event.fin:  # the common case
            data: Data | None = bytes(event.data)
        elif opcode is OP_TEXT or opcode is OP_BINARY or opcode is OP_CONT:
            data = self._assemble(event)
        else:
            super().process_event(event)  # ping (already answered), pong, close
            if opcode is OP_PONG and bytes(event.data) == self.ping_payload:
                self.latency = self.loop.time() - self.ping_sent
                self.ping_payload = None
            return
        if data is None or self.failed:
            return
        owner = self.owner
        if owner is None or self.waiting_on is not None or self.backlog:
            self.hold(data)
        else:
            owner._receive(self, data)

    def _assemble(self, event: Frame) -> Data | None:
        """The message a data frame completes (decoded if text), or None."""
        if event.opcode is OP_CONT:
            assert self.fragments is not None  # the protocol checks the sequence
            self.fragments.append(bytes(event.data))
            if not event.fin:
                return None
            raw, text = b"".join(self.fragments), self.fragments_text
            self.fragments = None
        elif not event.fin:
            self.fragments = [bytes(event.data)]
            self.fragments_text = event.opcode is OP_TEXT
            return None
        else:
            raw, text = bytes(event.data), event.opcode is OP_TEXT
        if not text:
            return raw
        try:
            return raw.decode()
        except UnicodeDecodeError as exc:
            # as websockets' recv() does: close with 1007
            self.fail(CloseCode.INVALID_DATA, f"{exc.reason} at position {exc.start}")
            return None

    def fail(self, code: CloseCode, reason: str) -> None:
        """Fail the connection as websockets does: send a close frame, ignore
        what follows, and drop the TCP connection if the peer does not close it
        within ``close_timeout``."""
        if self.failed:
            return
        self.failed = True
        self.ping_payload = None
        if self.protocol.state is _OPEN:
            self.protocol.fail(code, reason)
        try:
            self.send_data()
        except Exception as exc:
            self.set_connection_exc(exc)
            self.transport.abort()
        task = self.loop.create_task(self._abort_after_close_timeout())
        _TASKS.add(task)
        task.add_done_callback(_TASKS.discard)

    async def _abort_after_close_timeout(self) -> None:
        try:
            async with asyncio.timeout(self.close_timeout):
                await self.wait_closed()
        except TimeoutError:
            self.transport.abort()

    def hold(self, item: Data | Action, first: bool = False) -> None:
        """Queue ``item``; pause reading when too many frames wait."""
        backlog = self.backlog
        if backlog is None:
            backlog = self.backlog = collections.deque()
        if first:
            backlog.appendleft(item)
        else:
            backlog.append(item)
        if len(backlog) > MAX_QUEUE and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        owner = self.owner
        if owner is not None and not self.slow:
            self._parse(data, owner)
        else:
            opening = self.request is None
            super().data_received(data)
            if not opening or (self.request is not None and not data.endswith(b"\r\n\r\n")):
                # Bytes after the opening handshake came before its response
                # (or the handshake ended mid-chunk): websockets keeps parsing
                # this connection, as it may be in the middle of a frame.
                self.slow = True
        if owner is not None and owner._dirty:
            owner._flush()

    def _parse(self, data: bytes, owner: SignalingServer) -> None:
        """Cut ``data`` into frames; route unfragmented data frames directly.

        websockets' parser (a generator per connection) costs more than the
        rest of a relay; this one reads the frame headers itself and hands
        every frame it does not route (control frames, fragments, anything
        websockets would reject) whole to websockets, so websockets' parser
        is always at a frame boundary and applies its own rules to them.
        """
        buf = self.partial + data if self.partial else data
        self.partial = b""
        protocol = self.protocol
        limit = self.frame_limit
        end, size = 0, len(buf)
        while end < size:
            if protocol.state is not _OPEN:  # closing: websockets discards the rest
                super().data_received(buf[end:])
                return
            pos = end
            if size - pos < 2:
                break
            b0, b1 = buf[pos], buf[pos + 1]
            opcode = b0 & 0x0F
            if (
                not b1 & 0x80  # client frames must be masked
                or b0 & 0x70  # no extension: reserved bits must be 0
                or (opcode > 2 and (opcode not in _CONTROL or (b1 & 0x7F) > 125 or not b0 & 0x80))
            ):
                # websockets fails the connection: let it see the frame now
                self.slow = True
                super().data_received(buf[pos:])
                return
            length = b1 & 0x7F
            if length < 126:
                start = pos + 6
            elif length == 126:
                start = pos + 8
                length = int.from_bytes(buf[pos + 2 : pos + 4])
            else:
                start = pos + 14
                length = int.from_bytes(buf[pos + 2 : pos + 10])
            if length > limit and size >= start - 4:  # (once the length is complete)
                self.slow = True  # websockets closes with 1009
                super().data_received(buf[pos:])
                return
            end = start + length
            if end > size:  # (also when the header itself is incomplete)
                end = pos
                break
            if (b0 == 0x82 or b0 == 0x81) and self.fragments is None:
                payload = apply_mask(buf[start:end], buf[start - 4 : start])
                if b0 == 0x82:
                    message: Data = payload
                else:
                    try:
                        message = payload.decode()
                    except UnicodeDecodeError as exc:
                        self.fail(CloseCode.INVALID_DATA, f"{exc.reason} at position {exc.start}")
                        continue
                if self.waiting_on is not None or self.backlog:
                    self.hold(message)
                else:
                    owner._receive(self, message)
            else:
                super().data_received(buf[pos:end])
        if end < size:
            self.partial = buf[end:]

    def start(self, owner: SignalingServer, conn: ConnId) -> None:
        """The handler runs: route frames from now on."""
        protocol = self.protocol
        limits = [n for n in (protocol.max_message_size, protocol.max_fragment_size) if n]
        self.frame_limit = min(limits) if limits else 2**63
        if self.debug:  # websockets logs every frame it parses
            self.slow = True
        self.conn_id = conn
        self.owner = owner

    def eof_received(self) -> None:
        if self.partial:  # websockets must see the truncated frame
            partial, self.partial = self.partial, b""
            super().data_received(partial)
        super().eof_received()

    # -- outgoing ------------------------------------------------------------

    def write_frame(self, message: Data) -> None:
        """Queue a data frame (the protocol must be OPEN), as ``send`` would."""
        if isinstance(message, str):
            data, head = message.encode(), 0x81
        else:
            data, head = message, 0x82
        n = len(data)
        if n < 126:
            header = _HEADERS[head][n]
        elif n < 65536:
            header = struct.pack("!BBH", head, 126, n)
        else:
            header = struct.pack("!BBQ", head, 127, n)
        out = self.out
        if out is None:
            self.out = [header, data]
        else:
            out.append(header)
            out.append(data)

    def send_data(self) -> None:
        """Write pending output with as few writes as possible."""
        pending = self.out or []
        self.out = None
        for data in self.protocol.data_to_send():
            if data:
                pending.append(data)
                continue
            # end of stream: flush, then half-close as websockets does
            if pending:
                self.transport.write(b"".join(pending))
                pending = []
            if self.transport.can_write_eof():
                with contextlib.suppress(Exception):
                    self.transport.write_eof()
            else:  # pragma: no cover (TLS)
                self.transport.close()
        if pending:
            self.transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    # -- flow control ----------------------------------------------------------

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.blocked and self.owner is not None:
            self.owner._release(self, failed=False)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.blocked and self.owner is not None:
            self.owner._release(self, failed=exc is not None)


class SignalingServer:
    """A running signaling server. Use as ``async with SignalingServer(cfg) as s``."""

    def __init__(self, config: ServerConfig = ServerConfig()) -> None:
        self.config = config
        self.router = Router(max_frame=config.max_frame)
        self._connections: dict[ConnId, _Connection] = {}
        self._ids = itertools.count(1)
        self._server: Server | None = None
        #: connections with buffered output, to flush
        self._dirty: list[_Connection] = []
        self._keepalive_task: asyncio.Task[None] | None = None

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
            create_connection=_Connection,
            process_request=self._check_path,
            max_size=cfg.max_frame * HARD_LIMIT_FACTOR,
            # One task pings every connection (see _keepalive), rather than
            # websockets' task per connection.
            ping_interval=None,
            close_timeout=cfg.close_timeout,
            # Signaling frames are small and mostly base64: compression costs
            # CPU and ~100 KiB per connection for zlib state.
            compression=None,
            max_queue=MAX_QUEUE,
        )
        if cfg.ping_interval is not None:
            self._keepalive_task = asyncio.create_task(
                self._keepalive(cfg.ping_interval, cfg.ping_timeout)
            )
        log.info("listening on %s", self.url)

    async def close(self) -> None:
        """Close every connection with 1001 (going away) and stop listening."""
        if self._server is None:
            return
        if self._keepalive_task is not None:
            self._keepalive_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keepalive_task
            self._keepalive_task = None
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
        assert isinstance(ws, _Connection)
        conn = next(self._ids)
        path = Path(urlsplit(ws.request.path).path if ws.request else "/offer")
        # Nothing reads the handshake's headers any more: free them (~2.4 KiB
        # per connection, a sixth of an idle connection's memory).
        for message in (ws.request, ws.response):
            if message is not None:
                message.headers = Headers()
        self._connections[conn] = ws
        self.router.connect(conn, path)
        log.debug("conn %s: open on %s from %s", conn, path.value, ws.remote_address)
        try:
            ws.start(self, conn)
            self._run_backlog(ws)  # frames that came before this task started
            self._flush()
            await ws.wait_closed()
            # Like a handler stuck in ``await target.send()``: the peer stays
            # registered while its last forward waits for a full target.
            while ws.waiting_on is not None or ws.backlog:
                ws.idle = ws.loop.create_future()
                await ws.idle
        finally:
            ws.owner = None
            ws.backlog = None
            self.router.disconnect(conn)
            del self._connections[conn]
            log.debug("conn %s: closed (%s)", conn, ws.close_code)

    # -- routing --------------------------------------------------------------

    def _receive(self, ws: _Connection, frame: Data) -> None:
        """Route one frame from ``ws`` (not blocked, nothing queued before it)."""
        self._perform(ws, self.router.receive(ws.conn_id, frame))

    def _perform(self, ws: _Connection, actions: list[Action]) -> None:
        """Perform ``actions`` for sender ``ws``; stop and queue the rest if blocked."""
        for i, action in enumerate(actions):
            if isinstance(action, Forward):
                target = self._connections.get(action.target)
                if target is None or target.protocol.state is not _OPEN:
                    self._perform(ws, self.router.forward_failed(action))
                    blocked = ws.waiting_on is not None
                else:
                    # the ack is held while the forward waits for the target
                    blocked = self._write(target, action.frame, ws, action) or self._write(
                        ws, action.ack, ws, None
                    )
            else:
                to = self._connections.get(action.conn)
                blocked = to is not None and self._write(to, action.frame, ws, None)
            if blocked:  # the rest waits, in front of any queued frame
                for rest in reversed(actions[i + 1 :]):
                    ws.hold(rest, first=True)
                return

    def _write(
        self, target: _Connection, frame: Data, sender: _Connection, forward: Forward | None
    ) -> bool:
        """Buffer ``frame`` for ``target``; True if ``sender`` must now wait for it."""
        protocol = target.protocol
        if protocol.state is not _OPEN:
            return False  # as ``send`` raising ConnectionClosed, ignored for replies
        target.write_frame(frame)
        if target.transport.get_write_buffer_size():
            # The target is already behind: write now to learn if it is full,
            # as ``await send()`` would (otherwise: one write per batch).
            self._flush_one(target)
            if target.paused:
                sender.waiting_on = target
                sender.waiting_for = forward
                if target.blocked is None:
                    target.blocked = []
                target.blocked.append(sender)
                return True
        elif not target.dirty:
            target.dirty = True
            self._dirty.append(target)
        return False

    def _flush_one(self, ws: _Connection) -> None:
        try:
            ws.send_data()
        except Exception as exc:  # as websockets' data_received does
            ws.set_connection_exc(exc)
            ws.transport.abort()

    def _flush(self) -> None:
        """Write what was buffered for every connection, one write each."""
        dirty = self._dirty
        while dirty:
            ws = dirty.pop()
            ws.dirty = False
            self._flush_one(ws)

    def _release(self, target: _Connection, failed: bool) -> None:
        """``target`` drained (or died): let the senders it held go on."""
        senders, target.blocked = target.blocked or [], None
        for ws in senders:
            forward, ws.waiting_on, ws.waiting_for = ws.waiting_for, None, None
            if forward is not None:
                if failed:
                    self._perform(ws, self.router.forward_failed(forward))
                else:
                    self._perform(ws, [Send(forward.sender, forward.ack)])
            self._run_backlog(ws)
        self._flush()

    def _run_backlog(self, ws: _Connection) -> None:
        """Route what ``ws`` queued while it was blocked or not started."""
        backlog = ws.backlog
        while backlog and ws.waiting_on is None:
            item = backlog.popleft()
            if isinstance(item, bytes | str):
                self._perform(ws, self.router.receive(ws.conn_id, item))
            else:
                self._perform(ws, [item])
        if ws.waiting_on is None:
            if ws.reading_paused:
                ws.reading_paused = False
                ws.transport.resume_reading()
            if ws.idle is not None and not ws.idle.done():
                ws.idle.set_result(None)

    # -- keepalive and failures ------------------------------------------------------

    async def _keepalive(self, interval: float, timeout: float | None) -> None:
        """Ping every open connection each ``interval``; fail those that stay silent."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            payload = os.urandom(4)
            sent_at = loop.time()
            pinged: list[ConnId] = []
            for ws in list(self._connections.values()):
                if ws.ping_payload is not None or ws.protocol.state is not _OPEN:
                    continue
                ws.protocol.send_ping(payload)
                ws.ping_payload, ws.ping_sent = payload, sent_at
                self._flush_one(ws)
                pinged.append(ws.conn_id)
                if len(pinged) % PING_BATCH == 0:
                    await asyncio.sleep(0)
            if timeout is not None and pinged:
                loop.call_later(timeout, self._check_pongs, pinged, payload)

    def _check_pongs(self, pinged: list[ConnId], payload: bytes) -> None:
        for conn in pinged:
            ws = self._connections.get(conn)
            if ws is not None and ws.ping_payload is payload:
                log.debug("conn %s: no pong within the ping timeout", conn)
                ws.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")


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
