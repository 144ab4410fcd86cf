"""The vocabulary between the router and the I/O layer: response codes,
the actions the router returns, and the response frames it builds.

Kept apart from :mod:`signaling.router` so that the rules read alone; these
are plain values and pure helpers, no state beyond a reply cache.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from rtc_signal.proto.commands import Command
from rtc_signal.proto.wire import response_frame

ConnId = int
Frame = bytes | str

OK = 0
BAD_REQUEST = 400
FORBIDDEN = 403
NOT_FOUND = 404
CONFLICT = 409
TOO_LARGE = 413
TOO_MANY_REQUESTS = 429
SERVICE_UNAVAILABLE = 503

#: refusals of one connection logged one by one; after them, one line per
#: REFUSALS_PER_LINE (with the count), so that a client repeating a refused
#: frame cannot fill the log
LOGGED_REFUSALS = 10
REFUSALS_PER_LINE = 100


class Path(enum.Enum):
    """The two endpoints of the Go demo, and rtc-signal's rooms."""

    REGISTER = "/register"  # answer peers: wait to be called
    OFFER = "/offer"  # offer peers: the callers
    ROOM = "/room"  # room members (docs/PROTOCOL.md "Rooms")


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``frame`` on ``conn`` (a reply; the frame type matches the client's).

    ``notice``: a frame the server originates (a room's Presence), possibly to
    another connection than the sender's: it never makes the sender wait for
    that connection's buffer, and it earns the receiver a reply credit (its
    ack is not charged to its rate limit), like a forwarded frame.
    """

    conn: ConnId
    frame: Frame
    notice: bool = False


@dataclass(slots=True)  # (not frozen: see below)
class Forward:
    """Relay ``frame`` verbatim to ``target``, then send ``ack`` to ``sender``.

    If the target's connection turns out to be closed, the I/O layer calls
    :meth:`Router.forward_failed` instead of sending ``ack``.

    Made for every relayed frame, so not frozen like the other actions
    (treat it as immutable all the same): a frozen dataclass's ``__init__``
    sets each field through ``object.__setattr__``, which took 2.1 us for
    these six against 0.5 us (~4 % of the server's CPU per relayed message).
    """

    target: ConnId
    frame: Frame
    sender: ConnId
    ack: Frame
    reply: Command
    target_id: str


@dataclass(frozen=True, slots=True)
class Claim:
    """Claim ``peer_id`` (``kind``: "answer" or "offer") for ``conn`` across
    the cluster (:mod:`signaling.registry`), then tell the router with
    :meth:`Router.claimed` and handle ``frame`` again. Until then ``conn``'s
    next frames wait, so that nothing it sends runs ahead of its claim.
    """

    conn: ConnId
    kind: str
    peer_id: str
    resume: str | None
    frame: Frame
    reply: Command


@dataclass(frozen=True, slots=True)
class RemoteForward:
    """Relay ``frame`` verbatim to peer ``target_id`` (of ``kind``) on another
    node: ``node``, or whichever node holds the ID if None. The sender's
    reply (ack, 404, 503) comes from :meth:`Router.remote_result` once that
    node has handed the frame over, or not.
    """

    sender: ConnId
    frame: Frame
    kind: str
    source_id: str
    target_id: str
    node: str | None
    reply: Command


@dataclass(frozen=True, slots=True)
class RoomClaim:
    """Join ``member`` (for ``conn``) to ``room`` across the cluster: the
    cluster checks the ID and the size limit atomically, tells the members'
    other nodes, and answers with the members before it; then call
    :meth:`Router.room_claimed`. Until then ``conn``'s next frames wait.
    """

    conn: ConnId
    room: str
    member: str
    text: bool


@dataclass(frozen=True, slots=True)
class RoomLeft:
    """``member`` left ``room`` on this node: free its place in the cluster
    and tell the members' other nodes (Presence ``leave``)."""

    room: str
    member: str


Action = Send | Forward | Claim | RemoteForward | RoomClaim | RoomLeft

#: the cluster's answer to a :class:`RoomClaim`: a refusal code (409 ID taken
#: in the room, 503 room full), UNAVAILABLE (Redis unreachable), or (the
#: member's join seq, the members before it: (member, node, seq), oldest first)
RoomOutcome = int | str | tuple[int, list[tuple[str, str, int]]]

#: the kind of a :class:`RemoteForward` between room members; its IDs are
#: ``room "\n" member`` (a room name holds no newline)
ROOM = "room"

#: outcomes of a :class:`Claim` (:meth:`Router.claimed`)
CLAIMED = "claimed"
TAKEN = "taken"
UNAVAILABLE = "unavailable"
#: no claim needed: an ID the server made up for a virtual peer of this node (WHEP)
LOCAL = "local"


@dataclass(frozen=True, slots=True)
class Held:
    """An answer peer's ID is held for its resume key: call
    :meth:`Router.release` with it when the grace period ends."""

    peer_id: str
    token: int


_COMMAND_PREFIX = re.compile(rb'\s*\{\s*"command"\s*:\s*(\d{1,3})\D')


def peek_command(frame: Frame) -> Command | None:
    """The command of a frame we refuse to parse (too large), if it shows early."""
    # surrogatepass: a str that is not valid Unicode must not raise here
    head = frame[:32].encode("utf-8", "surrogatepass") if isinstance(frame, str) else frame[:32]
    match = _COMMAND_PREFIX.match(head)
    if match is None:
        return None
    try:
        return Command(int(match.group(1)))
    except ValueError:
        return None


def wire_size(frame: Frame) -> int:
    """The frame's size in bytes: a text frame's UTF-8 length, not its characters."""
    if isinstance(frame, bytes) or frame.isascii():
        return len(frame)
    return len(frame.encode("utf-8", "surrogatepass"))


def reply_to(command: Command | None) -> Command:
    """The response command for a frame of ``command`` (ERROR if unknown or a response)."""
    return Command.ERROR if command is None else command.response


RESPONSE = {c: c.response for c in Command}


class Replies:
    """Response frames, cached for the constant ones (every ack is the same)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[Command, int, str, bool], Frame] = {}

    def get(self, command: Command, code: int, msg: str, text: bool) -> Frame:
        key = (command, code, msg, text)
        frame = self._cache.get(key)
        if frame is None:
            raw = response_frame(command, code, msg)
            frame = raw.decode() if text else raw
            # acks, and the one constant error a flooder gets over and over
            if code in (OK, TOO_MANY_REQUESTS):
                self._cache[key] = frame
        return frame
