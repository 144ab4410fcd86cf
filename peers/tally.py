"""When a room timer run (``rtc-peer join --count N``) is complete: pure.

Each member gets its own sequence ``<id>-1`` .. ``<id>-N`` from us, started
when our connection to it opens, so a member that joins late still gets all
N. The run is complete when:

- at least ``expect`` members have *finished* with us: we sent them N
  messages and received N from them, and
- every member present in the room now has finished (one that joined and is
  still connecting holds the run open). A member that left before finishing
  no longer counts (it is not a member any more); :meth:`Tally.left` says
  whether it had finished, for the user.

A fresh connection to a member (it rejoined, or the connection was set up
again) starts its counts again: both sides restart their sequences.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass
class Counts:
    sent: int = 0
    received: int = 0


class Tally:
    def __init__(self, count: int, expect: int, present: Iterable[str] = ()) -> None:
        if count < 1 or expect < 0:
            raise ValueError("count must be >= 1 and expect >= 0")
        self.count = count
        self.expect = expect
        #: members in the room now (finished or not)
        self.present: set[str] = set(present)
        self.counts: dict[str, Counts] = {}
        #: members that finished with us (kept after they leave)
        self.finished: set[str] = set()

    def joined(self, member: str) -> None:
        self.present.add(member)

    def connected(self, member: str) -> None:
        """A (new) connection to ``member``: its counts start from zero."""
        self.present.add(member)
        self.counts[member] = Counts()
        self.finished.discard(member)

    def sent(self, member: str) -> None:
        self._counts(member).sent += 1
        self._check(member)

    def received(self, member: str) -> None:
        self._counts(member).received += 1
        self._check(member)

    def left(self, member: str) -> Counts | None:
        """``member`` left; its counts if it left before finishing, else None."""
        self.present.discard(member)
        counts = self.counts.pop(member, None)
        if member in self.finished:
            return None
        return counts or Counts()

    def done(self) -> bool:
        return len(self.finished) >= self.expect and self.present <= self.finished

    def progress(self) -> str:
        """A short summary for the user (``b 3/3 sent 2/3 received, ...``)."""
        parts = [
            f"{member} {c.sent}/{self.count} sent {c.received}/{self.count} received"
            for member, c in sorted(self.counts.items())
        ]
        waiting = sorted(self.present - set(self.counts))
        parts += [f"{member} not connected" for member in waiting]
        return ", ".join(parts) or "no members"

    def _counts(self, member: str) -> Counts:
        return self.counts.setdefault(member, Counts())

    def _check(self, member: str) -> None:
        counts = self.counts[member]
        if counts.sent >= self.count and counts.received >= self.count:
            self.finished.add(member)
