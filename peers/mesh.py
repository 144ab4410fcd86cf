"""Who connects to whom in a room: a pure (sans-I/O) mesh state machine.

Inputs are what a room member learns: the member list after its Join,
presence events (join, leave), Offer/Answer/Candidate frames from other
members, and what becomes of its peer connections (open, closed by the
other side, failed). Each input returns a list of actions for the I/O layer
(:mod:`peers.room`) to carry out: make an offer, answer one, hand an answer
or a candidate to a connection, close one, tell the user something.

The rules (docs/PROTOCOL.md, "Rooms"):

- **No glare.** For every pair the member that joined later offers. The
  members listed after our Join were there first: we offer to each. A member
  that joins after us is expected to offer to us; we wait.
- **Leave closes.** A member's ``leave`` closes our connection to it.
- **Rejoin is a fresh start.** A member that left and comes back under the
  same ID is a new member: a new connection (a new *link* number).
- **Links.** Each connection attempt has a number; inputs about a link that
  is no longer the member's current one (closed, replaced) are ignored, so a
  late event from an old connection never touches the new one.
- **Failures.** A connection that fails (not opened in time, ICE failed) is
  closed; if we are the offerer we offer again, at most :data:`MAX_ATTEMPTS`
  times per member. A connection the other side closes cleanly is not
  retried: the member is leaving (its ``leave`` follows) or will offer again.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

#: offers we make to one member (the first and the retries after failures)
MAX_ATTEMPTS = 3
#: candidates kept from a member whose offer has not arrived yet
MAX_EARLY_CANDIDATES = 64


# -- actions -----------------------------------------------------------------


@dataclass(frozen=True)
class MakeOffer:
    """Create connection ``link`` to ``member`` and send it our offer."""

    member: str
    link: int


@dataclass(frozen=True)
class AcceptOffer:
    """Create connection ``link`` from ``member``'s offer and send our answer."""

    member: str
    link: int
    offer: bytes | None


@dataclass(frozen=True)
class ApplyAnswer:
    """Give ``member``'s answer to connection ``link`` (that offered)."""

    member: str
    link: int
    answer: bytes | None


@dataclass(frozen=True)
class AddCandidate:
    """Give a trickled candidate of ``member`` to connection ``link``."""

    member: str
    link: int
    candidate: bytes | None


@dataclass(frozen=True)
class CloseLink:
    """Close connection ``link`` to ``member``."""

    member: str
    link: int


class Notice(enum.Enum):
    """What the user is told about a member."""

    JOINED = "joined"  # joined the room after us (or was there: see Mesh.joined)
    CONNECTED = "connected"  # our connection to it is open
    LEFT = "left"  # left the room (or was dropped by the server)


@dataclass(frozen=True)
class Notify:
    member: str
    notice: Notice


Action = MakeOffer | AcceptOffer | ApplyAnswer | AddCandidate | CloseLink | Notify


# -- state -------------------------------------------------------------------


class LinkState(enum.Enum):
    WAITING = "waiting"  # no connection: waiting for the member's offer
    OFFERED = "offered"  # we sent an offer, no answer yet
    ANSWERED = "answered"  # offer/answer done, connection opening
    OPEN = "open"


@dataclass
class Member:
    """What we know about one other member of the room."""

    name: str
    #: True if it was in the room before us: we offer to it
    we_offer: bool
    link: int | None = None
    state: LinkState = LinkState.WAITING
    attempts: int = 0
    early_candidates: list[bytes | None] = field(default_factory=list)


class Mesh:
    """The mesh of one member, ``self_id``, of a room (pure; no I/O).

    Members are kept in the order we learnt of them (the member list is
    oldest first, joiners are appended).
    """

    def __init__(self, self_id: str) -> None:
        self.self_id = self_id
        self.members: dict[str, Member] = {}
        self.joined_room = False
        self._next_link = 1

    # -- queries -------------------------------------------------------------

    def present(self) -> list[str]:
        """The other members in the room, as far as we know."""
        return list(self.members)

    def connected(self) -> list[str]:
        """The members our connection to is open."""
        return [m.name for m in self.members.values() if m.state is LinkState.OPEN]

    def current_link(self, member: str) -> int | None:
        entry = self.members.get(member)
        return None if entry is None else entry.link

    # -- inputs: the room ----------------------------------------------------

    def joined(self, members: Iterable[str]) -> list[Action]:
        """Our Join succeeded; ``members`` were there before us: offer to each."""
        if self.joined_room:
            log.warning("ignoring a second member list")
            return []
        self.joined_room = True
        actions: list[Action] = []
        for name in members:
            if name == self.self_id or name in self.members or not name:
                continue
            member = self.members[name] = Member(name, we_offer=True)
            actions.extend(self._offer(member))
        return actions

    def member_joined(self, name: str) -> list[Action]:
        """Presence ``join``: ``name`` joined after us and will offer; we wait."""
        if name == self.self_id or not name:
            return []
        actions: list[Action] = []
        old = self.members.pop(name, None)
        if old is not None:
            # (the server sends leave before a rejoin; this holds if it did not)
            actions.extend(self._close(old))
        self.members[name] = Member(name, we_offer=False)
        actions.append(Notify(name, Notice.JOINED))
        return actions

    def member_left(self, name: str) -> list[Action]:
        """Presence ``leave``: close our connection to ``name``, forget it."""
        member = self.members.pop(name, None)
        if member is None:
            return []
        return [*self._close(member), Notify(name, Notice.LEFT)]

    def leave(self) -> list[Action]:
        """We leave the room: close every connection."""
        actions: list[Action] = []
        for member in self.members.values():
            actions.extend(self._close(member))
        self.members.clear()
        self.joined_room = False
        return actions

    # -- inputs: signaling frames from members -------------------------------

    def offer_received(self, name: str, offer: bytes | None) -> list[Action]:
        """An Offer from ``name``: answer it with a fresh connection.

        Refused (ignored) from a member we offer to: it joined before us, so by
        the rule it never offers to us, and answering would make two
        connections for one pair.
        """
        if name == self.self_id or not name:
            return []
        actions: list[Action] = []
        member = self.members.get(name)
        if member is None:
            # The server sends presence before relaying the newcomer's offer;
            # an offer from a stranger still is a member joining after us.
            member = self.members[name] = Member(name, we_offer=False)
            actions.append(Notify(name, Notice.JOINED))
        elif member.we_offer:
            log.warning("ignoring an offer from %r: it was here first, we offer to it", name)
            return []
        else:
            actions.extend(self._close(member))  # a new offer replaces the old connection
        link = self._new_link()
        member.link, member.state = link, LinkState.ANSWERED
        actions.append(AcceptOffer(name, link, offer))
        early, member.early_candidates = member.early_candidates, []
        actions.extend(AddCandidate(name, link, body) for body in early)
        return actions

    def answer_received(self, name: str, answer: bytes | None) -> list[Action]:
        """An Answer from ``name``: for our connection if we are waiting for one."""
        member = self.members.get(name)
        if member is None or member.link is None or member.state is not LinkState.OFFERED:
            log.info("ignoring an answer from %r: no offer of ours is waiting", name)
            return []
        member.state = LinkState.ANSWERED
        return [ApplyAnswer(name, member.link, answer)]

    def candidate_received(self, name: str, candidate: bytes | None) -> list[Action]:
        """A Candidate from ``name``: to its connection, or kept until its offer."""
        member = self.members.get(name)
        if member is None:
            log.info("ignoring a candidate from %r: not a member we know", name)
            return []
        if member.link is None:
            if len(member.early_candidates) < MAX_EARLY_CANDIDATES:
                member.early_candidates.append(candidate)
            return []
        return [AddCandidate(name, member.link, candidate)]

    # -- inputs: our connections ---------------------------------------------

    def link_open(self, name: str, link: int) -> list[Action]:
        """Connection ``link`` to ``name`` is open (its data channel is)."""
        member = self._current(name, link)
        if member is None:
            return []
        member.state = LinkState.OPEN
        member.attempts = 0
        return [Notify(name, Notice.CONNECTED)]

    def link_closed(self, name: str, link: int) -> list[Action]:
        """The other side closed connection ``link``: no retry (it is leaving,
        or offers again if it is the offerer)."""
        member = self._current(name, link)
        if member is None:
            return []
        return self._close(member)

    def link_failed(self, name: str, link: int) -> list[Action]:
        """Connection ``link`` failed: close it; offer again if we are the
        offerer and have attempts left."""
        member = self._current(name, link)
        if member is None:
            return []
        actions = self._close(member)
        if member.we_offer:
            if member.attempts < MAX_ATTEMPTS:
                actions.extend(self._offer(member))
            else:
                log.warning("giving up on %r after %d offers", name, member.attempts)
        return actions

    # -- helpers -------------------------------------------------------------

    def _current(self, name: str, link: int) -> Member | None:
        member = self.members.get(name)
        if member is None or member.link != link:
            return None  # an old connection's late event
        return member

    def _new_link(self) -> int:
        link = self._next_link
        self._next_link += 1
        return link

    def _offer(self, member: Member) -> list[Action]:
        link = self._new_link()
        member.link, member.state = link, LinkState.OFFERED
        member.attempts += 1
        return [MakeOffer(member.name, link)]

    @staticmethod
    def _close(member: Member) -> list[Action]:
        if member.link is None:
            return []
        link, member.link, member.state = member.link, None, LinkState.WAITING
        return [CloseLink(member.name, link)]
