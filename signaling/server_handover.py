"""The server's side of handing ``/offer`` connections between workers.

A mixin of :class:`signaling.server.SignalingServer` (the asyncio layer; the
messages are in :mod:`signaling.handover`, the links in
:mod:`signaling.siblings`). With ``--workers N`` each worker is a node of
the cluster, and:

1. the first message of a fresh ``/offer`` connection is an Offer to an
   answer peer not held here (:meth:`Router.handover_target`): the worker
   holds it back (and what follows), asks Redis which node holds the target;
2. a sibling worker does: the connection, once quiet (nothing unwritten,
   nothing half-parsed by websockets), is offered to it with the bytes held
   back; reading stops meanwhile;
3. the sibling takes it (it counts it at its gate, makes a connection in
   the OPEN state around the socket and parses the bytes first), and the
   first worker closes its copy of the socket, which leaves the TCP
   connection open; or it declines, and the first worker routes the held
   messages itself, through Redis, as without a handover.

Limits count from TCP accept on the first worker; the sibling starts the
connection's rate limit and idle timer afresh, once: a connection moves at
most once, before anything of it reached the router.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import Server
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol

from rtc_signal.signaling.connection import FastPathConnection
from rtc_signal.signaling.handover import MAX_HANDOVER_BYTES, Handover, pending_bytes
from rtc_signal.signaling.router import Frame as Message
from rtc_signal.signaling.siblings import Outcome, SiblingLinks

if TYPE_CHECKING:
    from rtc_signal.signaling.cluster import Cluster
    from rtc_signal.signaling.counters import ServerCounters
    from rtc_signal.signaling.gate import AcceptGate
    from rtc_signal.signaling.router import Router

log = logging.getLogger(__name__)

_OPEN = State.OPEN
_OFFER_PATH = "/offer"
_ANSWER = "answer"
#: adopted connections' handler tasks (referenced until they end)
_TASKS: set[asyncio.Task[None]] = set()


class HandoverMixin:
    """Moves a fresh ``/offer`` connection to the sibling worker its call is on."""

    if TYPE_CHECKING:
        router: Router
        cluster: Cluster | None
        draining: bool
        counters: ServerCounters
        _gate: AcceptGate[FastPathConnection]
        _server: Server | None

        def _connection_class(self) -> type[FastPathConnection]: ...
        async def _handle(self, ws: Any, initial: bytes = b"") -> None: ...
        def _run_backlog(self, ws: FastPathConnection, limit: int = -1) -> bool: ...
        def flush(self) -> None: ...
        def _connection_settings(self) -> dict[str, Any]: ...

    siblings: SiblingLinks | None = None

    def _try_handover(self, ws: FastPathConnection, message: Message) -> bool:
        """Called with the first message of a connection that may move: True
        if it is held back while its target is looked up."""
        ws.may_move = False
        target = self.router.handover_target(ws.conn_id, message)
        if target is None or self.cluster is None:
            return False
        ws.waiting_on = ws  # (itself: its next messages queue behind this one)
        # in front: it may come from the backlog, whose rest follows it
        ws.hold(message, first=True)
        self.cluster.locate(_ANSWER, target, lambda node: self._located(ws, node))
        return True

    def _located(self, ws: FastPathConnection, node: str | None) -> None:
        siblings = self.siblings
        if node is None or siblings is None or node not in siblings.nodes or not _quiet(ws):
            self._stay(ws)
            return
        backlog = list(ws.backlog or ())
        messages = [m for m in backlog if isinstance(m, bytes | str)]
        data = pending_bytes(messages, ws.partial)
        if len(messages) != len(backlog) or len(data) > MAX_HANDOVER_BYTES:
            self._stay(ws)
            return
        transport = ws.transport
        transport.pause_reading()
        sock = transport.get_extra_info("socket")
        grant = (ws.allowed_id, ws.allowed_room)
        fd = sock.fileno() if sock is not None else -1
        if fd < 0 or not siblings.offer(
            node, _OFFER_PATH, grant, data, fd, lambda taken: self._handed(ws, taken)
        ):
            ws.read_unless_held()
            self._stay(ws)

    def _handed(self, ws: FastPathConnection, taken: Outcome) -> None:
        if taken is False:  # the sibling declined: serve it here after all
            ws.read_unless_held()
            self._stay(ws)
            return
        # The sibling has the socket (or may have it: no reply in time). Close
        # our copy only: the TCP connection lives on in the sibling.
        self.counters.moved["out"] += 1
        ws.backlog = None
        ws.partial = b""
        ws.waiting_on = None
        ws.failed = True  # (nothing more is parsed or written here)
        ws.transport.abort()
        if ws.idle is not None and not ws.idle.done():
            ws.idle.set_result(None)

    def _stay(self, ws: FastPathConnection) -> None:
        """Route the held messages here (through Redis), as without workers."""
        if ws.waiting_on is ws:
            ws.waiting_on = None
        # (also if the client left meanwhile: as for any queued message, and
        # it resolves ``idle``, which the connection's handler waits for)
        self._run_backlog(ws)
        self.flush()

    # -- the sibling's side ---------------------------------------------------------

    def _adopt(self, handover: Handover, sock: socket.socket) -> bool:
        """A sibling offers a connection: take it if there is room (the
        decision is made now; the sibling waits for it)."""
        server = self._server
        if self.draining or server is None or handover.path != _OFFER_PATH:
            return False
        try:
            peer = sock.getpeername()
        except OSError:  # the client left meanwhile
            return False
        address = peer[0] if isinstance(peer, tuple) and peer else None
        settings = self._connection_settings()
        max_size = settings.pop("max_size")  # (the protocol's, as serve() does)
        protocol = ServerProtocol(state=State.OPEN, max_size=max_size, logger=server.logger)
        ws = self._connection_class()(protocol, server, **settings)
        verdict = self._gate.accept(ws, address)
        if not verdict.accept:
            return False
        if verdict.evict is not None:
            verdict.evict.transport.abort()
        self._gate.admit(ws)  # (its request came long ago)
        self.counters.moved["in"] += 1
        ws.adopted = True
        ws.splitter = None
        ws.request = Request(handover.path, Headers())
        ws.response = Response(101, "Switching Protocols", Headers())
        ws.allowed_id, ws.allowed_room = handover.allowed_id, handover.allowed_room
        task = asyncio.get_running_loop().create_task(self._run_adopted(ws, sock, handover.data))
        server.handler_tasks.add(task)
        _TASKS.add(task)
        task.add_done_callback(_TASKS.discard)
        return True

    async def _run_adopted(self, ws: FastPathConnection, sock: socket.socket, data: bytes) -> None:
        """websockets' connection handler for an adopted connection, without
        the handshake (done by the sibling)."""
        server = self._server
        assert server is not None
        try:
            loop = asyncio.get_running_loop()
            try:
                await loop.connect_accepted_socket(lambda: ws, sock)
            except OSError as exc:
                log.info("adopting a connection failed: %s", exc)
                self._gate.close(ws)
                sock.close()
                return
            server.all_connections.add(ws)
            try:
                async with ws:
                    await self._handle(ws, data)
            except Exception:
                log.error("connection handler failed", exc_info=True)
            finally:
                server.all_connections.discard(ws)
        finally:
            task = asyncio.current_task()
            if task is not None:
                server.handler_tasks.discard(task)


def _quiet(ws: FastPathConnection) -> bool:
    """Whether all of ``ws``'s state is in its socket and in what it holds
    back: open, on the fast path, nothing fragmented, nothing unwritten."""
    return (
        ws.protocol.state is _OPEN
        and not ws.failed
        and not ws.slow
        and ws.fragments is None
        and not ws.out
        and not ws.throttled
        and not ws.paused
        and not ws.transport.is_closing()
        and ws.transport.get_write_buffer_size() == 0
        and not ws.protocol.writes
    )
