"""The connection limit, counted from TCP accept (pure bookkeeping, no I/O).

``--max-connections`` bounds file descriptors, and a connection holds one from
the moment it is accepted, not from the end of its WebSocket handshake:
counting only handshaken connections let 1,300 clients sending a byte a second
take every descriptor. So every accepted connection counts. At the limit:

- if some connections have not finished sending their request yet (slow
  clients, or a slowloris attack), the oldest of them is dropped to make room:
  an honest client sends its request within milliseconds, so it is never the
  oldest, while a crowd of slow ones only pushes out each other;
- if every connection has sent its request, the new one is refused at once.

The I/O layer asks :meth:`AcceptGate.accept` at accept time and performs the
answer, tells :meth:`AcceptGate.admit` when a request has arrived, and
:meth:`AcceptGate.close` when the TCP connection is gone.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Conn = TypeVar("Conn", bound=Hashable)


@dataclass(frozen=True, slots=True)
class Verdict(Generic[Conn]):
    """What to do with a newly accepted connection."""

    #: True: keep it; False: refuse it at once (every slot holds a request)
    accept: bool
    #: a connection still sending its request, to drop to make room (or None)
    evict: Conn | None = None


@dataclass(slots=True)
class AcceptGate(Generic[Conn]):
    limit: int | None
    #: accepted, request not complete yet; oldest first (dicts keep order)
    pending: dict[Conn, None] = field(default_factory=dict)
    #: request complete (a handshake under way or done, a page, WHEP)
    admitted: set[Conn] = field(default_factory=set)
    #: connections refused at accept, and dropped to make room (for /metrics)
    refused: int = 0
    evicted: int = 0

    def __len__(self) -> int:
        return len(self.pending) + len(self.admitted)

    def accept(self, conn: Conn) -> Verdict[Conn]:
        """``conn`` was just accepted."""
        evict: Conn | None = None
        if self.limit is not None and len(self) >= self.limit:
            if not self.pending:
                self.refused += 1
                return Verdict(False)
            evict = next(iter(self.pending))
            del self.pending[evict]
            self.evicted += 1
        self.pending[conn] = None
        return Verdict(True, evict)

    def admit(self, conn: Conn) -> None:
        """``conn``'s request arrived: it is no longer a candidate for eviction."""
        if self.pending.pop(conn, 0) is None:
            self.admitted.add(conn)

    def full(self) -> bool:
        """Whether the next connection would be refused: every slot holds a
        connection that has sent its request (none to drop to make room)."""
        return self.limit is not None and len(self.admitted) >= self.limit

    def close(self, conn: Conn) -> None:
        """``conn``'s TCP connection is gone."""
        self.pending.pop(conn, None)
        self.admitted.discard(conn)
