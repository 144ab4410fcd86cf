"""The links between the workers of one ``--workers`` group (asyncio I/O).

``rtc-signal serve --workers N`` makes one Unix SOCK_SEQPACKET socket pair
per pair of workers before it starts them (signaling/workers.py), so that
only the workers of one parent can reach each other: no path in the file
system, nothing another local user could connect to. A worker hands a
connection to a sibling over its link: the socket itself (SCM_RIGHTS) and a
:class:`signaling.handover.Handover` (see that module for why and what).

Every wait is bounded: a send that would block is not made (the connection
stays where it is), and a handover whose reply does not come within
``reply_timeout`` is treated as taken (the sibling may hold the socket: the
sender must not go on with it).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
from collections.abc import Callable

from rtc_signal.signaling.handover import (
    MAX_HANDOVER_BYTES,
    RECEIVE_BUFFER,
    Handover,
    decode,
    encode_handover,
    encode_reply,
)
from rtc_signal.signaling.logtext import clip

log = logging.getLogger(__name__)

#: a sibling answers a handover at once (a synchronous decision)
REPLY_TIMEOUT = 5.0
#: link messages handled per wake-up, so that a busy link never starves the loop
READ_BATCH = 64

#: the sibling took the socket (True), kept it out (False), or did not say (None)
Outcome = bool | None
#: decides on a handover offered by a sibling: True if it took the socket
HandoverHandler = Callable[[Handover, socket.socket], bool]


class SiblingLinks:
    """This worker's links to its siblings, by node ID."""

    def __init__(
        self,
        links: dict[str, int],
        on_handover: HandoverHandler,
        reply_timeout: float = REPLY_TIMEOUT,
    ) -> None:
        self._socks = {node: socket.socket(fileno=fd) for node, fd in links.items()}
        self._on_handover = on_handover
        self._reply_timeout = reply_timeout
        self._seq = itertools.count(1)
        #: handovers awaiting the sibling's reply: seq -> (done, timer)
        self._pending: dict[int, tuple[Callable[[Outcome], None], asyncio.TimerHandle]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def nodes(self) -> frozenset[str]:
        return frozenset(self._socks)

    def start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        for node, sock in self._socks.items():
            sock.setblocking(False)
            loop.add_reader(sock.fileno(), self._readable, node, sock)

    def close(self) -> None:
        """Stop: the handovers still awaiting a reply count as taken (their
        sockets may be the siblings' now)."""
        for node, sock in list(self._socks.items()):
            self._drop(node, sock)
        pending, self._pending = self._pending, {}
        for done, timer in pending.values():
            timer.cancel()
            done(None)

    def offer(
        self,
        node: str,
        path: str,
        grant: tuple[str | None, str | None],
        data: bytes,
        fd: int,
        done: Callable[[Outcome], None],
    ) -> bool:
        """Offer the connection on ``fd`` to ``node``; ``done`` gets the
        outcome later. False (and ``done`` is never called) if it could not
        be offered: no such sibling, too much data, or a full link."""
        sock = self._socks.get(node)
        loop = self._loop
        if sock is None or loop is None or len(data) > MAX_HANDOVER_BYTES:
            return False
        seq = next(self._seq)
        message = encode_handover(Handover(seq, path, grant[0], grant[1], data))
        try:
            socket.send_fds(sock, [message], [fd])
        except OSError as exc:  # BlockingIOError (a full link) included
            log.debug("handover to %s not sent: %s", clip(node), exc)
            return False
        timer = loop.call_later(self._reply_timeout, self._timed_out, seq, node)
        self._pending[seq] = (done, timer)
        return True

    def _timed_out(self, seq: int, node: str) -> None:
        pending = self._pending.pop(seq, None)
        if pending is not None:
            timeout = self._reply_timeout
            log.warning("worker %s did not answer a handover within %g s", node, timeout)
            pending[0](None)

    def _readable(self, node: str, sock: socket.socket) -> None:
        for _ in range(READ_BATCH):
            try:
                message, fds, _flags, _addr = socket.recv_fds(sock, RECEIVE_BUFFER, 1)
            except BlockingIOError:
                return
            except OSError as exc:
                log.error("link to worker %s failed: %s", node, exc)
                self._drop(node, sock)
                return
            if not message and not fds:  # the sibling is gone
                log.info("link to worker %s closed", node)
                self._drop(node, sock)
                return
            try:
                self._handle(sock, message, fds)
            except Exception:  # a bug must not stop the link
                log.exception("handling a message from worker %s failed", node)
                _close_fds(fds)

    def _handle(self, sock: socket.socket, message: bytes, fds: list[int]) -> None:
        decoded = decode(message)
        if isinstance(decoded, tuple):
            seq, taken = decoded
            pending = self._pending.pop(seq, None)
            if pending is not None:
                pending[1].cancel()
                pending[0](taken)
            return
        taken = False
        if len(fds) == 1:
            conn = socket.socket(fileno=fds.pop())
            taken = self._on_handover(decoded, conn)
            if not taken:
                conn.close()
        _close_fds(fds)  # (none normally)
        try:
            sock.send(encode_reply(decoded.seq, taken))
        except OSError as exc:  # the sibling times out and drops its copy
            log.warning("could not answer a handover: %s", exc)

    def _drop(self, node: str, sock: socket.socket) -> None:
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(sock.fileno())
        sock.close()
        self._socks.pop(node, None)


def _close_fds(fds: list[int]) -> None:
    """Close file descriptors received with a link message and not taken."""
    for fd in fds:
        with contextlib.suppress(OSError):
            socket.socket(fileno=fd).close()
