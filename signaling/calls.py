"""The calls the router knows of: which offer connection called which answer peer.

Sans-I/O and clock-free, like the router that owns it. A call starts when an
offer peer's Offer (3) is forwarded to an answer peer (or a Candidate (4)
before it: pion's peers may trickle first); from then on, and only then, the
answer peer's Answer (2) and Candidates may reach that offer peer. (What an
offer peer sends is its own call's: its ``source`` is bound to its
connection.) This is what stops a registered peer, token or not, from
injecting an answer or candidates into somebody else's call (the first step
of sitting in its middle) by naming its target: the server, not the peers,
knows who called whom.

A call ends when either side leaves (:meth:`CallTable.drop_offer`,
:meth:`CallTable.drop_answer`), when its offer connection starts more than
``max_per_offer`` calls (the oldest goes), or after ``idle_ticks`` calls of
:meth:`CallTable.tick` without signaling (the I/O layer ticks on a timer, so
that is a bounded time; a call that is set up needs no more signaling).
"""

from __future__ import annotations

from dataclasses import dataclass, field

ConnId = int

#: calls one offer connection may have at once (the oldest is forgotten)
MAX_CALLS_PER_OFFER = 16
#: ticks without signaling after which a call is forgotten
IDLE_TICKS = 10


@dataclass(slots=True)
class CallTable:
    max_per_offer: int = MAX_CALLS_PER_OFFER
    idle_ticks: int = IDLE_TICKS
    #: offer connection -> {answer peer ID: tick of its last signaling},
    #: in the order the calls started (dicts keep insertion order)
    _by_offer: dict[ConnId, dict[str, int]] = field(default_factory=dict)
    #: answer peer ID -> the offer connections that call it
    _by_answer: dict[str, set[ConnId]] = field(default_factory=dict)
    _now: int = 0

    def start(self, offer: ConnId, answer_id: str) -> None:
        """An Offer (or Candidate) from ``offer`` was forwarded to ``answer_id``."""
        calls = self._by_offer.get(offer)
        if calls and next(reversed(calls)) == answer_id:
            # already its newest call (every frame of a call after the first):
            # only refreshed, as below would (0.25 us here, 0.8 us below)
            calls[answer_id] = self._now
            return
        calls = self._by_offer.setdefault(offer, {})
        calls.pop(answer_id, None)  # (re)started: now the newest
        calls[answer_id] = self._now
        self._by_answer.setdefault(answer_id, set()).add(offer)
        while len(calls) > self.max_per_offer:
            self._forget(offer, next(iter(calls)))

    def touch(self, offer: ConnId, answer_id: str) -> bool:
        """Whether ``offer`` and ``answer_id`` have a call (refreshing it if so)."""
        calls = self._by_offer.get(offer)
        if calls is None or answer_id not in calls:
            return False
        calls[answer_id] = self._now
        return True

    def drop_offer(self, offer: ConnId) -> None:
        """The offer connection left: its calls end."""
        for answer_id in list(self._by_offer.get(offer, ())):
            self._forget(offer, answer_id)

    def drop_answer(self, answer_id: str) -> None:
        """The answer peer left (for good, not held for a reconnect): its calls end."""
        for offer in list(self._by_answer.get(answer_id, ())):
            self._forget(offer, answer_id)

    def tick(self) -> int:
        """One unit of time passed; forget the calls idle for ``idle_ticks``.
        Returns how many were forgotten."""
        self._now += 1
        oldest = self._now - self.idle_ticks
        stale = [
            (offer, answer_id)
            for offer, calls in self._by_offer.items()
            for answer_id, last in calls.items()
            if last <= oldest
        ]
        for offer, answer_id in stale:
            self._forget(offer, answer_id)
        return len(stale)

    def __len__(self) -> int:
        return sum(len(calls) for calls in self._by_offer.values())

    def _forget(self, offer: ConnId, answer_id: str) -> None:
        calls = self._by_offer.get(offer)
        if calls is not None:
            calls.pop(answer_id, None)
            if not calls:
                del self._by_offer[offer]
        callers = self._by_answer.get(answer_id)
        if callers is not None:
            callers.discard(offer)
            if not callers:
                del self._by_answer[answer_id]
