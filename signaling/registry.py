"""Who holds a peer ID: this process alone, or a cluster of nodes (sans-I/O).

The router keeps its own connections' IDs in plain dicts (the hot path: a
local target is one dict lookup, as it always was). A :class:`Registry` is
what it asks only when that is not enough, so that the embedded default costs
nothing:

- :class:`LocalRegistry` (the default, no Redis): this process is the whole
  world. No ID needs claiming elsewhere and no target lives elsewhere; a miss
  is a 404, as it always was.
- :class:`ClusterRegistry` (``rtc-signal serve --redis``): IDs are claimed in
  the cluster before a connection may use them (the router returns a
  :class:`~signaling.actions.Claim`; the I/O layer, :mod:`signaling.cluster`,
  runs it in Redis), a target that is not here is looked for on the other
  nodes (:class:`~signaling.actions.RemoteForward`), and calls whose offer
  peer is on another node are remembered here, so that this node checks what
  its own answer peers send, as it does for local calls
  (:mod:`signaling.calls`).

Nothing here does I/O or reads a clock: the remote calls age with
:meth:`ClusterRegistry.tick`, like the router's own calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from rtc_signal.signaling.calls import IDLE_TICKS, MAX_CALLS_PER_OFFER

#: the kinds of ID, as named in Redis keys (``rtc:answer:ID``, ``rtc:offer:ID``)
ANSWER = "answer"
OFFER = "offer"


class Registry(Protocol):
    """What the router asks about IDs beyond its own connections."""

    #: whether IDs must be claimed cluster-wide before they are used
    clustered: bool

    def remote_caller(self, answer_id: str, offer_id: str) -> str | None:
        """The node of offer peer ``offer_id`` if it called local ``answer_id``."""

    def remote_call(self, answer_id: str, offer_id: str, node: str) -> None:
        """Offer peer ``offer_id`` on ``node`` signaled local answer peer ``answer_id``."""

    def drop_answer(self, answer_id: str) -> None:
        """Local answer peer ``answer_id`` left for good: its remote calls end."""

    def tick(self) -> int:
        """A unit of time passed; returns how many remote calls ended."""


class LocalRegistry:
    """One process, no cluster: every ID is in the router's own dicts."""

    clustered = False

    def remote_caller(self, answer_id: str, offer_id: str) -> str | None:
        return None

    def remote_call(self, answer_id: str, offer_id: str, node: str) -> None:
        return None

    def drop_answer(self, answer_id: str) -> None:
        return None

    def tick(self) -> int:
        return 0


@dataclass(slots=True)
class ClusterRegistry:
    """This node's view of a cluster: its name and the calls from other nodes.

    ``calls``: local answer peer ID -> {remote offer peer ID: [node, tick of
    its last signaling]}. An entry is made when the offer peer's Offer (or
    Candidate) reaches the answer peer from ``node``; only then may the
    answer peer's Answer and Candidates go back to it (else 403), and they
    go straight to ``node``.
    """

    node: str
    clustered: bool = True
    max_per_answer: int = MAX_CALLS_PER_OFFER * 4
    idle_ticks: int = IDLE_TICKS
    calls: dict[str, dict[str, list[str | int]]] = field(default_factory=dict)
    _now: int = 0

    def remote_caller(self, answer_id: str, offer_id: str) -> str | None:
        call = self.calls.get(answer_id, {}).get(offer_id)
        if call is None:
            return None
        call[1] = self._now
        node = call[0]
        assert isinstance(node, str)
        return node

    def remote_call(self, answer_id: str, offer_id: str, node: str) -> None:
        callers = self.calls.setdefault(answer_id, {})
        callers.pop(offer_id, None)  # (re)started: now the newest
        callers[offer_id] = [node, self._now]
        while len(callers) > self.max_per_answer:  # bounded, like CallTable's
            del callers[next(iter(callers))]

    def drop_answer(self, answer_id: str) -> None:
        self.calls.pop(answer_id, None)

    def tick(self) -> int:
        self._now += 1
        oldest = self._now - self.idle_ticks
        ended = 0
        for answer_id in list(self.calls):
            callers = self.calls[answer_id]
            stale = [offer_id for offer_id, (_, last) in callers.items() if int(last) <= oldest]
            for offer_id in stale:
                del callers[offer_id]
            ended += len(stale)
            if not callers:
                del self.calls[answer_id]
        return ended

    def __len__(self) -> int:
        return sum(len(callers) for callers in self.calls.values())
