"""The connection limits, counted from TCP accept (pure bookkeeping, no I/O).

``--max-connections`` bounds file descriptors, and a connection holds one from
the moment it is accepted, not from the end of its WebSocket handshake:
counting only handshaken connections let 1,300 clients sending a byte a second
take every descriptor. So every accepted connection counts. At the limit:

- if some connections have not finished sending their request yet (slow
  clients, or a slowloris attack), the oldest of them is dropped to make room:
  an honest client sends its request within milliseconds, so it is never the
  oldest, while a crowd of slow ones only pushes out each other;
- if every connection has sent its request, the new one is refused at once.

``--max-connections-per-ip`` (off by default: behind a reverse proxy every
connection comes from the proxy's address) bounds the connections of one
source address, counted the same way; a connection over it is refused at once
and evicts nobody, so that one host can only use up its own share.

The I/O layer asks :meth:`AcceptGate.accept` at accept time and performs the
answer, tells :meth:`AcceptGate.admit` when a request has arrived, and
:meth:`AcceptGate.close` when the TCP connection is gone.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Conn = TypeVar("Conn", bound=Hashable)


class Refusal(enum.Enum):
    """Why a new connection was refused."""

    #: every slot of --max-connections holds a connection that sent its request
    FULL = "full"
    #: its source address already holds --max-connections-per-ip connections
    PER_IP = "per-ip"


@dataclass(frozen=True, slots=True)
class Verdict(Generic[Conn]):
    """What to do with a newly accepted connection."""

    #: True: keep it; False: refuse it at once (see ``refusal``)
    accept: bool
    #: a connection still sending its request, to drop to make room (or None)
    evict: Conn | None = None
    #: why it was refused (None if accepted)
    refusal: Refusal | None = None


@dataclass(slots=True)
class AcceptGate(Generic[Conn]):
    limit: int | None
    #: connections one source address may hold (None: no per-address limit)
    per_ip: int | None = None
    #: accepted, request not complete yet; oldest first (dicts keep order)
    pending: dict[Conn, None] = field(default_factory=dict)
    #: request complete (a handshake under way or done, a page, WHEP)
    admitted: set[Conn] = field(default_factory=set)
    #: with ``per_ip``: each counted connection's source address ...
    address_of: dict[Conn, str] = field(default_factory=dict)
    #: ... and how many counted connections each address holds (no zeros kept)
    per_address: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.pending) + len(self.admitted)

    def accept(self, conn: Conn, address: str | None = None) -> Verdict[Conn]:
        """``conn`` was just accepted from source ``address`` (None if unknown:
        the per-address limit does not apply to it)."""
        if self.per_ip is None:
            address = None  # not counted per address
        elif address is not None and self.per_address.get(address, 0) >= self.per_ip:
            return Verdict(False, refusal=Refusal.PER_IP)
        evict: Conn | None = None
        if self.limit is not None and len(self) >= self.limit:
            if not self.pending:
                return Verdict(False, refusal=Refusal.FULL)
            evict = next(iter(self.pending))
            self.close(evict)
        self.pending[conn] = None
        if address is not None:
            self.address_of[conn] = address
            self.per_address[address] = self.per_address.get(address, 0) + 1
        return Verdict(True, evict)

    def admit(self, conn: Conn) -> None:
        """``conn``'s request arrived: it is no longer a candidate for eviction."""
        if self.pending.pop(conn, 0) is None:
            self.admitted.add(conn)

    def close(self, conn: Conn) -> None:
        """``conn``'s TCP connection is gone (or it was evicted); idempotent."""
        self.pending.pop(conn, None)
        self.admitted.discard(conn)
        address = self.address_of.pop(conn, None)
        if address is not None:
            left = self.per_address[address] - 1
            if left:
                self.per_address[address] = left
            else:
                del self.per_address[address]
