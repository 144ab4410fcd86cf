"""The signaling server's WebSocket connection: websockets with a fast path for data.

Why it exists: with websockets' ``async for message in ws`` and ``await
ws.send()``, a relayed message cost more in websockets' machinery than in the
relay itself (a generator-based frame parser, a queue and a task wake-up per
message, one ``write`` per frame; a loopback ``send`` costs ~10 us).
``benchmarks/README.md`` has the measurements. :class:`FastPathConnection`
(a :class:`~websockets.asyncio.server.ServerConnection` passed to
``serve(create_connection=...)``) therefore, once its owner has started it:

- cuts unfragmented data frames out of the byte stream itself (header, C
  ``apply_mask``) and hands each message to its owner at once, from
  ``data_received``;
- frames outgoing data frames itself (:meth:`~FastPathConnection.write_frame`)
  and writes them, with anything websockets queued, in one ``write``
  (:meth:`~FastPathConnection.send_data`) when the owner flushes, once per
  read rather than once per frame.

What websockets still does: the opening handshake; control frames (it
answers pings, matches pongs, runs the closing handshake); fragmented
messages; and judging every frame it would reject (bad masking, reserved
bits, bad opcode, too large), which is handed to it whole and at once, so
its parser is always at a frame boundary and applies its own rules and close
codes. A connection whose bytes websockets may have started parsing before
the owner started it (a client that did not wait for the 101), or that runs
with websockets' debug logging, stays on websockets' parser for good.

The owner (:class:`ConnectionOwner`, the server) routes what it receives and
decides flow control; it keeps its per-connection state in this class's
slots, next to the fast path's, because a separate object per connection
would cost memory (see ``__slots__``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import struct
from typing import Any, ClassVar, Protocol

from websockets.asyncio.connection import Connection
from websockets.asyncio.server import ServerConnection
from websockets.frames import CloseCode, Frame, Opcode
from websockets.protocol import State

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover (websockets built without its C extension)
    from websockets.utils import apply_mask

from rtc_signal.signaling.counters import HANDSHAKE_TIMEOUT, ServerCounters
from rtc_signal.signaling.gate import AcceptGate, Refusal
from rtc_signal.signaling.limits import TokenBucket
from rtc_signal.signaling.plainhttp import BodySplitter
from rtc_signal.signaling.router import Action, ConnId, Forward
from rtc_signal.signaling.router import Frame as Message

_OPEN = State.OPEN
_CONTROL = frozenset((Opcode.CLOSE, Opcode.PING, Opcode.PONG))
_CONT, _TEXT, _BINARY, _PONG = Opcode.CONT, Opcode.TEXT, Opcode.BINARY, Opcode.PONG
#: headers of unmasked text and binary frames of up to 125 bytes
_HEADERS = {op: [bytes((op, n)) for n in range(126)] for op in (0x81, 0x82)}
#: tasks that must not be garbage-collected while they run
_TASKS: set[asyncio.Task[None]] = set()


class ConnectionOwner(Protocol):
    """What a started :class:`FastPathConnection` calls on its owner."""

    #: messages the owner routes in this turn of the event loop; at 0 they
    #: go to :meth:`defer` instead of :meth:`receive`
    budget: int

    def receive(self, ws: FastPathConnection, message: Message) -> None:
        """Handle a message from ``ws`` (not held, nothing queued before it)."""

    def defer(self, ws: FastPathConnection, message: Message, light: bool = False) -> None:
        """Keep ``message`` from ``ws`` for a later turn of the loop (``budget``
        is 0); ``light``: no other message came with it."""

    def flush(self) -> None:
        """Write the output buffered while handling a read (one write per connection)."""

    def drained(self, ws: FastPathConnection, failed: bool) -> None:
        """Connections wait on ``ws`` (its ``blocked``) and its write buffer has
        drained, or ``ws`` was lost (``failed`` if with an error)."""


#: the largest plain HTTP request body read (a WHEP offer is a few KiB)
MAX_HTTP_BODY = 64 * 1024


def _unavailable(body: bytes) -> bytes:
    """A complete HTTP 503 response with a plain-text reason."""
    return (
        b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )


#: the answers to a connection accepted over a limit (see connection_made)
FULL_RESPONSE = _unavailable(b"rtc-signal: too many connections; try again later\n")
PER_IP_RESPONSE = _unavailable(
    b"rtc-signal: too many connections from your address; try again later\n"
)


class BodyTooLarge(ValueError):
    """A plain HTTP request body over MAX_HTTP_BODY."""


class FastPathConnection(ServerConnection):
    """A websockets connection whose data messages go straight to its owner.

    Until :meth:`start`, and while the owner holds it (``waiting_on``),
    messages wait in ``backlog``; the owner takes them from there.
    """

    # Slots, not instance attributes: websockets already sets 27, and past 30
    # CPython stops sharing the keys of instance dicts (+1.3 KiB each).
    __slots__ = (
        "adopted",
        "allowed_id",
        "allowed_room",
        "backlog",
        "blocked",
        "body_waiter",
        "bucket",
        "conn_id",
        "credits",
        "dirty",
        "failed",
        "fragments",
        "fragments_text",
        "frame_limit",
        "gate",
        "idle",
        "inbox",
        "may_move",
        "out",
        "owner",
        "partial",
        "ping_payload",
        "ping_sent",
        "reading_paused",
        "slow",
        "splitter",
        "throttled",
        "waiting_for",
        "waiting_on",
        "waiting_turn",
    )

    #: the owner's byte and handshake counters (for /metrics): a class
    #: attribute, set by the subclass the owner makes, so no slot per connection
    counters: ClassVar[ServerCounters] = ServerCounters()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.owner: ConnectionOwner | None = None
        # -- the fast path ---------------------------------------------------
        #: frames written outside the protocol, sent before its own output
        self.out: list[bytes] | None = None
        #: set once the connection is failed: its data frames are ignored
        self.failed = False
        #: fragments of a message in progress, and whether it is text
        self.fragments: list[bytes] | None = None
        self.fragments_text = False
        #: websockets parses every incoming byte of this connection (see _parse)
        self.slow = False
        #: the start of an incomplete frame (see _parse)
        self.partial = b""
        #: the largest frame websockets accepts (its ``max_size``)
        self.frame_limit = 0
        # -- keepalive (the owner pings, see send_keepalive_ping) --------------
        #: payload of the keepalive ping awaiting its pong, and when it was sent
        self.ping_payload: bytes | None = None
        self.ping_sent = 0.0
        # -- messages the owner has not taken yet ----------------------------
        #: messages not handed over yet, behind the actions the owner put back
        self.backlog: collections.deque[Message | Action] | None = None
        self.reading_paused = False
        # -- the owner's state (read here: waiting_on, blocked) --------------
        self.conn_id: ConnId = 0
        #: the connection whose full write buffer holds our next action
        self.waiting_on: FastPathConnection | None = None
        #: the forward written to ``waiting_on`` whose ack is held (None: a reply)
        self.waiting_for: Forward | None = None
        #: connections whose progress waits for our write buffer to drain
        self.blocked: list[FastPathConnection] | None = None
        #: its messages wait for a later turn of the loop (the owner's ``defer``)
        self.waiting_turn = False
        #: has output buffered and is queued for the owner's flush
        self.dirty = False
        #: resolved when the backlog is empty and nothing is held
        self.idle: asyncio.Future[None] | None = None
        #: the ID this connection's token grants (set at the handshake), if any
        self.allowed_id: str | None = None
        #: the room its token grants the ID in (a room token), if any
        self.allowed_room: str | None = None
        #: the owner's connection limit, counted from accept (see connection_made);
        #: a subclass made by the owner sets it before the connection is made
        self.gate: AcceptGate[FastPathConnection] | None = None
        #: the message rate limit's state, if the owner limits the rate
        self.bucket: TokenBucket | None = None
        #: the budget of frames others may have forwarded to us (same limit)
        self.inbox: TokenBucket | None = None
        #: messages we may send without charge to ``bucket``: one per frame
        #: forwarded to us (its ack, our answer), so that what others send us
        #: is never charged to us (see the owner's ``receive``)
        self.credits = 0
        # -- plain HTTP requests on the same port (WHEP) ---------------------
        #: until the head is parsed: cuts off a request body (see plainhttp)
        self.splitter: BodySplitter | None = BodySplitter(MAX_HTTP_BODY)
        #: resolved when the body is complete, if a handler waits for it
        self.body_waiter: asyncio.Future[None] | None = None
        #: reading is paused because the connection is over its rate limit
        self.throttled = False
        # -- handing the connection to a sibling worker (signaling/handover.py) --
        #: its first message may still move it to the worker its call is on
        self.may_move = False
        #: it came from a sibling worker, handshake done (see connection_made)
        self.adopted = False

    def start(self, owner: ConnectionOwner, conn: ConnId) -> None:
        """The owner's handler runs: hand it messages from now on."""
        protocol = self.protocol
        limits = [n for n in (protocol.max_message_size, protocol.max_fragment_size) if n]
        self.frame_limit = min(limits) if limits else 2**63
        if self.debug:  # websockets logs every frame it parses
            self.slow = True
        self.conn_id = conn
        self.owner = owner

    async def handshake(self, *args: Any, **kwargs: Any) -> None:
        try:
            await super().handshake(*args, **kwargs)
        except asyncio.CancelledError:
            # websockets' open_timeout (our handshake timeout) is what cancels
            # a handshake, but for the tasks left at the loop's shutdown
            self.counters.refuse(HANDSHAKE_TIMEOUT)
            raise

    # -- incoming ------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self.counters.bytes_in += len(data)
        owner = self.owner
        if owner is not None and not self.slow:
            self._parse(data, owner)
        else:
            if self.splitter is not None:
                data = self._split_body(data)
                if not data:
                    return
            opening = self.request is None
            super().data_received(data)
            if not opening or (self.request is not None and not data.endswith(b"\r\n\r\n")):
                # Bytes after the opening handshake came before its response
                # (or the handshake ended mid-chunk): websockets keeps parsing
                # this connection, as it may be in the middle of a frame.
                self.slow = True
        if owner is not None:
            owner.flush()

    def _split_body(self, data: bytes) -> bytes:
        """Before the handshake: keep a request body from websockets (which
        refuses bodies) for the plain HTTP handler; return the rest."""
        splitter = self.splitter
        assert splitter is not None
        data = splitter.feed(data)
        if splitter.passthrough:
            self.splitter = None  # a handshake (or a request without a body)
        elif splitter.complete and self.body_waiter is not None and not self.body_waiter.done():
            self.body_waiter.set_result(None)
        return data

    async def request_body(self, timeout: float) -> bytes:
        """The body of this connection's plain HTTP request (b"" if none).

        Raises :class:`BodyTooLarge` beyond ``MAX_HTTP_BODY``, TimeoutError
        if it does not arrive within ``timeout`` seconds.
        """
        splitter = self.splitter
        if splitter is None or not splitter.head_done:
            return b""
        if not splitter.complete:
            self.body_waiter = self.loop.create_future()
            await asyncio.wait_for(asyncio.shield(self.body_waiter), timeout)
        if splitter.too_large:
            raise BodyTooLarge(f"request body over {MAX_HTTP_BODY} bytes")
        return bytes(splitter.body)

    def _parse(self, data: bytes, owner: ConnectionOwner) -> None:
        """Cut ``data`` into frames; hand unfragmented data messages to ``owner``.

        Every frame not handled here (control frames, fragments, anything
        websockets would reject) goes whole to websockets, so that its parser
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
                    message: Message = payload
                else:
                    try:
                        message = payload.decode()
                    except UnicodeDecodeError as exc:
                        self._fail_invalid_utf8(exc)
                        continue
                if self.waiting_on is not None or self.backlog:
                    self.hold(message)
                elif owner.budget <= 0:  # this turn of the loop is spent
                    owner.defer(self, message, end >= size)
                else:
                    owner.receive(self, message)
            else:
                super().data_received(buf[pos:end])
        if end < size:
            self.partial = buf[end:]

    def process_event(self, event: Any) -> None:
        """Frames websockets parsed: data messages go to the owner, the rest to websockets."""
        if self.request is None or not isinstance(event, Frame):
            super().process_event(event)  # the handshake request
            return
        opcode = event.opcode
        if opcode is _TEXT or opcode is _BINARY or opcode is _CONT:
            message = self._assemble(event)
        else:
            super().process_event(event)  # ping (already answered), pong, close
            if opcode is _PONG and bytes(event.data) == self.ping_payload:
                self.latency = self.loop.time() - self.ping_sent
                self.ping_payload = None
            return
        if message is None or self.failed:
            return
        owner = self.owner
        if owner is None or self.waiting_on is not None or self.backlog:
            self.hold(message)
        elif owner.budget <= 0:
            owner.defer(self, message)
        else:
            owner.receive(self, message)

    def _assemble(self, event: Frame) -> Message | None:
        """The message a data frame completes (decoded if text), or None."""
        if event.opcode is _CONT:
            assert self.fragments is not None  # the protocol checks the sequence
            self.fragments.append(bytes(event.data))
            if not event.fin:
                return None
            raw, text = b"".join(self.fragments), self.fragments_text
            self.fragments = None
        elif not event.fin:
            self.fragments = [bytes(event.data)]
            self.fragments_text = event.opcode is _TEXT
            return None
        else:
            raw, text = bytes(event.data), event.opcode is _TEXT
        if not text:
            return raw
        try:
            return raw.decode()
        except UnicodeDecodeError as exc:
            self._fail_invalid_utf8(exc)
            return None

    def eof_received(self) -> None:
        if self.partial:  # websockets must see the truncated frame
            partial, self.partial = self.partial, b""
            super().data_received(partial)
        super().eof_received()

    # -- messages the owner has not taken yet -----------------------------------

    def hold(self, item: Message | Action, first: bool = False) -> None:
        """Queue ``item`` in the backlog; pause reading when more than
        ``max_queue`` wait, as websockets does for messages nobody reads."""
        backlog = self.backlog
        if backlog is None:
            backlog = self.backlog = collections.deque()
        if first:
            backlog.appendleft(item)
        else:
            backlog.append(item)
        high = self.max_queue_high
        if high is not None and len(backlog) > high:
            self.stop_reading()

    def stop_reading(self) -> None:
        """Pause reading until the backlog is routed (:meth:`resume_reading`)."""
        if not self.reading_paused and not self.transport.is_closing():
            self.reading_paused = True
            self.transport.pause_reading()

    # Reading is paused for any of three reasons, each with its flag: the
    # backlog is full (``reading_paused``, :meth:`hold`), the rate limit
    # (``throttled``, :meth:`throttle`) and the peer not reading what we write
    # (``paused``, websockets' flag set by :meth:`pause_writing`). Reading
    # resumes when the last of them is lifted.

    def resume_reading(self) -> None:
        """Read again if :meth:`hold` paused reading (and nothing else holds it)."""
        if self.reading_paused:
            self.reading_paused = False
            self.read_unless_held()

    def read_unless_held(self) -> None:
        """Resume reading unless one of the three reasons still holds it (or
        the connection is closing)."""
        held = self.reading_paused or self.throttled or self.paused
        if not held and not self.transport.is_closing():
            self.transport.resume_reading()

    def throttle(self, seconds: float) -> None:
        """Stop reading for ``seconds`` (over the rate limit): the client's
        further messages wait in the kernel and then in the client, not in
        our CPU time."""
        if self.throttled or self.transport.is_closing():
            return
        self.throttled = True
        self.transport.pause_reading()
        self.loop.call_later(seconds, self._unthrottle)

    def _unthrottle(self) -> None:
        self.throttled = False
        self.read_unless_held()

    # -- outgoing ------------------------------------------------------------

    def write_frame(self, message: Message) -> None:
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
        """Write pending output (ours, then websockets') with as few writes as possible."""
        pending = self.out or []
        self.out = None
        for data in self.protocol.data_to_send():
            if data:
                pending.append(data)
                continue
            # end of stream: flush, then half-close as websockets does
            if pending:
                joined = b"".join(pending)
                self.counters.bytes_out += len(joined)
                self.transport.write(joined)
                pending = []
            if self.transport.can_write_eof():
                with contextlib.suppress(Exception):
                    self.transport.write_eof()
            else:  # pragma: no cover (TLS)
                self.transport.close()
        if pending:
            out = pending[0] if len(pending) == 1 else b"".join(pending)
            self.counters.bytes_out += len(out)
            self.transport.write(out)

    def write_pending(self) -> None:
        """:meth:`send_data`; if writing fails, drop the connection as websockets'
        own ``data_received`` does."""
        try:
            self.send_data()
        except Exception as exc:
            self.set_connection_exc(exc)
            self.transport.abort()

    def send_keepalive_ping(self, payload: bytes, now: float) -> None:
        """Ping now; :attr:`ping_payload` is cleared when the pong comes back."""
        self.protocol.send_ping(payload)
        self.ping_payload, self.ping_sent = payload, now
        self.write_pending()

    # -- failures ----------------------------------------------------------------

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
        self.write_pending()
        task = self.loop.create_task(self._abort_after_close_timeout())
        _TASKS.add(task)
        task.add_done_callback(_TASKS.discard)

    def _fail_invalid_utf8(self, exc: UnicodeDecodeError) -> None:
        # as websockets' recv() does: close with 1007
        self.fail(CloseCode.INVALID_DATA, f"{exc.reason} at position {exc.start}")

    async def _abort_after_close_timeout(self) -> None:
        try:
            async with asyncio.timeout(self.close_timeout):
                await self.wait_closed()
        except TimeoutError:
            self.transport.abort()

    # -- flow control ------------------------------------------------------------

    def pause_writing(self) -> None:
        super().pause_writing()
        # The peer does not read what we write: stop reading it as well, or a
        # client that sends without reading (a ping flood: websockets answers
        # every ping with a pong) grows our write buffer without bound.
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        self.read_unless_held()
        if self.blocked and self.owner is not None:
            self.owner.drained(self, failed=False)

    def feed(self, data: bytes) -> None:
        """Parse bytes the client sent before this process had the connection
        (a handover), as if just read; the owner must have started it."""
        assert self.owner is not None
        self._parse(data, self.owner)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.adopted:
            # Handed over by a sibling worker after its handshake: no handshake
            # task (ServerConnection's), and the owner counted it at its gate.
            # Nothing is read until the owner has started it and fed it the
            # bytes the sibling read (see the owner's adoption).
            Connection.connection_made(self, transport)
            transport.pause_reading()  # type: ignore[attr-defined]
            return
        super().connection_made(transport)
        gate = self.gate
        if gate is None:
            return
        peer = transport.get_extra_info("peername")
        # (an IPv4 or IPv6 socket address; anything else is not limited per address)
        address = peer[0] if isinstance(peer, tuple) and peer else None
        verdict = gate.accept(self, address)
        if verdict.evict is not None:
            # the oldest connection still sending its request makes room
            verdict.evict.transport.abort()
        if not verdict.accept:
            # every slot holds a connection that has sent its request, or its
            # address holds its share: refuse at once, before reading
            # anything (HTTP allows an early response)
            self.gate = None  # never counted
            # (self.transport, the one websockets keeps: uvloop's transports
            # are not asyncio.WriteTransport instances, so no isinstance here)
            refusal = PER_IP_RESPONSE if verdict.refusal is Refusal.PER_IP else FULL_RESPONSE
            self.transport.write(refusal)
            self.counters.bytes_out += len(refusal)
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.gate is not None:
            self.gate.close(self)
        if self.blocked and self.owner is not None:
            self.owner.drained(self, failed=exc is not None)
