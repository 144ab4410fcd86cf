"""The rules of ``/room``: Join, Leave, Presence and relaying inside a room (sans-I/O).

Called by :class:`signaling.router.Router` for every request on a ``/room``
connection (and when one closes); returns the router's actions. The
protocol is docs/PROTOCOL.md "Rooms"; in short:

- Join (5) ``source`` = member ID, ``target`` = room: ``105 {0,"ok"}``, then a
  Presence (6) ``members`` (the others, oldest first) to the joiner and a
  Presence ``join`` to every other member. Leave (7), or the connection
  closing, sends a Presence ``leave`` to the others; an empty room vanishes.
- Offer (3), Answer (2), Candidate (4) go from a member to another member of
  the same room only, forwarded verbatim to it alone. Calls belong to their
  members, as on the 1:1 paths (:mod:`signaling.calls`): an Offer from A to
  B starts the call (A, B); B's Answer reaches A only then; Candidates travel
  only within a call, except that the pair's mesh offerer (the later joiner)
  may send its Candidates before its Offer, as pion's peers do.
- Codes: 400 bad room name or member ID; 403 not a member, a lying
  ``source``, a target in another room, a token for another room or ID, an
  Answer/Candidate outside a call, Init or Presence from a client; 404
  unknown member; 409 ID taken in the room, connection already in a room;
  503 room full.

In a cluster (``node`` set) a room spans the nodes: a Join becomes a
:class:`~signaling.actions.RoomClaim` (Redis checks the ID and the size limit
and answers with the members before it, :meth:`RoomRules.claimed`); a leave
adds a :class:`~signaling.actions.RoomLeft`; other nodes' members are known
from :mod:`signaling.room_remote` (updated by :meth:`RoomRules.presence`), a
relay to one is a :class:`~signaling.actions.RemoteForward` of kind ``room``
checked with the same call rules, and relays from them come in through
:meth:`RoomRules.deliver`. Without a cluster none of this runs.

Room calls are kept in their own :class:`~signaling.calls.CallTable`, keyed
``room "\\n" member`` (a room name holds no newline), so they never mix with
the 1:1 calls of the same IDs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from rtc_signal.proto.commands import Command
from rtc_signal.proto.rooms import event_body, is_room_name, member_id_problem, members_body
from rtc_signal.proto.routing import peek_request
from rtc_signal.proto.wire import request_frame
from rtc_signal.signaling.actions import (
    BAD_REQUEST,
    CONFLICT,
    FORBIDDEN,
    NOT_FOUND,
    OK,
    RESPONSE,
    ROOM,
    SERVICE_UNAVAILABLE,
    Action,
    ConnId,
    Forward,
    Frame,
    RemoteForward,
    RoomClaim,
    RoomLeft,
    RoomOutcome,
    Send,
)
from rtc_signal.signaling.calls import CallTable
from rtc_signal.signaling.logtext import clip
from rtc_signal.signaling.room_remote import RemoteRooms
from rtc_signal.signaling.rooms import DEFAULT_MAX_ROOM_SIZE, Membership, Refusal, RoomTable

log = logging.getLogger(__name__)

#: builds an error reply: (conn, response command, code, msg, text) -> Send
ErrorReply = Callable[[ConnId, Command, int, str, bool], Send]
#: builds an ok reply frame: (response command, text) -> frame
OkFrame = Callable[[Command, bool], Frame]

_RELAYED = frozenset((Command.OFFER, Command.ANSWER, Command.CANDIDATE))


def _frame(raw: bytes, text: bool) -> Frame:
    return raw.decode() if text else raw


class RoomRules:
    """Rooms and their calls; answers the requests of ``/room`` connections."""

    def __init__(
        self,
        error: ErrorReply,
        ok: OkFrame,
        max_size: int = DEFAULT_MAX_ROOM_SIZE,
        node: str | None = None,
    ) -> None:
        self._error = error
        self._ok = ok
        self.table = RoomTable(max_size)
        #: this node's name in a cluster (None: one process, rooms are all here)
        self.node = node
        #: the members of this node's rooms on other nodes, and their calls
        self.remote = RemoteRooms()
        #: rooms with joins under way here -> how many (their Presence counts)
        self._joining: dict[str, int] = {}
        #: members elsewhere seen leaving a room while a join here was under
        #: way: the bus may bring the leave before the Join's answer lists them
        self._gone: dict[str, set[str]] = {}
        # a member may be in a call with every other member of its room
        self._calls = CallTable(max_per_offer=max(max_size - 1, 1))

    # -- queries --------------------------------------------------------------

    def member_id(self, conn: ConnId) -> str | None:
        joined = self.table.membership(conn)
        return None if joined is None else joined.member

    def calls(self) -> int:
        return len(self._calls)

    def tick(self) -> int:
        return self._calls.tick()

    # -- requests ---------------------------------------------------------------

    def receive(
        self,
        conn: ConnId,
        command: Command,
        source: str,
        target: str,
        frame: Frame,
        text: bool,
        grant: tuple[str | None, str | None],
    ) -> list[Action]:
        """A request from ``conn``; ``grant`` is its token's (ID, room), or
        (None, None) on a server without tokens."""
        joined = self.table.membership(conn)
        if joined is not None:
            joined.text = text  # replies and notices follow the client's latest frame type
        reply = RESPONSE[command]
        if command is Command.JOIN:
            return self._join(conn, source, target, text, grant)
        if command is Command.LEAVE:
            return self._leave_command(conn, joined, source, target, text)
        if command in _RELAYED:
            return self._relay(conn, joined, command, source, target, frame, text)
        why = (
            "register (command 1) on /register, not /room"
            if command is Command.INIT
            else f"command {int(command)} is not sent by clients on /room"
        )
        return [self._error(conn, reply, FORBIDDEN, why, text)]

    def leave(self, conn: ConnId) -> list[Action]:
        """``conn`` leaves its room (Leave, closed, or gone): Presence ``leave``
        to the others, its calls end; nothing if it was in no room."""
        joined = self.table.leave(conn)
        if joined is None:
            return []
        self._calls.drop_offer(conn)
        self._calls.drop_answer(_call_key(joined.room, joined.member))
        log.info("member %s left room %s", clip(joined.member), joined.room)
        body = event_body(joined.room, "leave", joined.member)
        actions = self._notify_others(joined, body)
        if self.node is not None:
            self.remote.drop_local(joined.room, joined.member)
            self._forget_if_unused(joined.room)
            actions.append(RoomLeft(joined.room, joined.member))
        return actions

    # -- rules ----------------------------------------------------------------

    def _join(
        self,
        conn: ConnId,
        member: str,
        room: str,
        text: bool,
        grant: tuple[str | None, str | None],
    ) -> list[Action]:
        reply = Command.JOIN_RESPONSE
        joined = self.table.membership(conn)
        if joined is not None:
            msg = f"this connection is already in room {joined.room}; leave (command 7) first"
            return [self._error(conn, reply, CONFLICT, msg, text)]
        if not is_room_name(room):
            msg = f"bad room name {clip(room)} (1-64 of A-Z a-z 0-9 . _ -)"
            return [self._error(conn, reply, BAD_REQUEST, msg, text)]
        problem = member_id_problem(member)
        if problem is not None:
            return [self._error(conn, reply, BAD_REQUEST, problem, text)]
        allowed_id, allowed_room = grant
        if allowed_id is not None and (allowed_id != member or allowed_room != room):
            msg = (
                "this connection's token is not for a room"
                if allowed_room is None
                else f"this connection's token is for {clip(allowed_id)} in room {allowed_room}"
            )
            return [self._error(conn, reply, FORBIDDEN, msg, text)]
        if self.node is not None:
            if self.table.conn_of(room, member) is not None:
                msg = f"member ID {clip(member)} is already taken in room {room}"
                return [self._error(conn, reply, CONFLICT, msg, text)]
            self._joining[room] = self._joining.get(room, 0) + 1
            return [RoomClaim(conn, room, member, text)]
        others = self.table.connections(room)
        result = self.table.join(conn, room, member, text)
        if isinstance(result, Refusal):
            return [self._error(conn, reply, result.code, result.msg, text)]
        log.info("member %s joined room %s (%d members)", clip(member), room, len(others) + 1)
        members = members_body(room, list(others))
        actions: list[Action] = [
            Send(conn, self._ok(reply, text)),
            Send(conn, _frame(request_frame(Command.PRESENCE, "", member, members), text), True),
        ]
        actions += self._notify_others(result, event_body(room, "join", member))
        return actions

    def _leave_command(
        self, conn: ConnId, joined: Membership | None, member: str, room: str, text: bool
    ) -> list[Action]:
        reply = Command.LEAVE_RESPONSE
        if joined is None or joined.member != member or joined.room != room:
            msg = (
                "not a member of any room"
                if joined is None
                else f"this connection is {clip(joined.member)} in room {joined.room}"
            )
            return [self._error(conn, reply, FORBIDDEN, msg, text)]
        notices = self.leave(conn)
        return [Send(conn, self._ok(reply, text)), *notices]

    def _relay(
        self,
        conn: ConnId,
        joined: Membership | None,
        command: Command,
        source: str,
        target: str,
        frame: Frame,
        text: bool,
    ) -> list[Action]:
        reply = RESPONSE[command]
        if joined is None:
            return [self._error(conn, reply, FORBIDDEN, "join a room (command 5) first", text)]
        if source != joined.member:
            msg = f"source {clip(source)} is not this connection's member ID {clip(joined.member)}"
            return [self._error(conn, reply, FORBIDDEN, msg, text)]
        room = joined.room
        target_conn = self.table.conn_of(room, target)
        if target_conn is None and self.node is not None:
            remote = self.remote.where(room, target)
            if remote is not None:
                return self._relay_remote(conn, joined, command, target, remote, frame, text)
        if target_conn is None:
            if self.table.elsewhere(target, room):
                msg = f"{clip(target)} is not a member of room {room}"
                return [self._error(conn, reply, FORBIDDEN, msg, text)]
            msg = f"no member {clip(target)} in room {room}"
            return [self._error(conn, reply, NOT_FOUND, msg, text)]
        if target_conn == conn:
            return [self._error(conn, reply, FORBIDDEN, "a member cannot call itself", text)]
        refused = self._check_call(conn, joined, command, target, target_conn)
        if refused is not None:
            return [self._error(conn, reply, FORBIDDEN, refused, text)]
        return [Forward(target_conn, frame, conn, self._ok(reply, text), reply, target)]

    def _check_call(
        self, conn: ConnId, joined: Membership, command: Command, target: str, target_conn: ConnId
    ) -> str | None:
        """Start or check the call this request belongs to; why not, if refused."""
        room, member = joined.room, joined.member
        if command is Command.OFFER:
            self._calls.start(conn, _call_key(room, target))
            return None
        # Its Answer: the target must have offered to it.
        if self._calls.touch(target_conn, _call_key(room, member)):
            return None
        if command is Command.CANDIDATE:
            if self._calls.touch(conn, _call_key(room, target)):
                return None  # its own call (it offered)
            other = self.table.membership(target_conn)
            if other is not None and joined.seq > other.seq:
                # the pair's offerer by the mesh rule, trickling before its Offer
                self._calls.start(conn, _call_key(room, target))
                return None
        return f"{clip(member)} and {clip(target)} have no call (the offer comes first)"

    # -- a cluster (self.node set) --------------------------------------------------

    def claimed(self, claim: RoomClaim, outcome: RoomOutcome) -> list[Action]:
        """The cluster's answer to ``claim`` (for an open connection): a code
        (409, 503), or (its join seq, the room's members before it: (member,
        node, seq), oldest first)."""
        conn, room, member, text = claim.conn, claim.room, claim.member, claim.text
        reply = Command.JOIN_RESPONSE
        gone = self._gone.get(room, set())
        self._unjoining(room)
        if not isinstance(outcome, tuple):
            self._forget_if_unused(room)
            if outcome == CONFLICT:
                msg = f"member ID {clip(member)} is already taken in room {room}"
                return [self._error(conn, reply, CONFLICT, msg, text)]
            if outcome == SERVICE_UNAVAILABLE:
                msg = f"room {room} is full ({self.table.max_size} members)"
            else:
                msg = "the cluster is unavailable (its Redis is unreachable); try again later"
            return [self._error(conn, reply, SERVICE_UNAVAILABLE, msg, text)]
        seq, before = outcome
        for other, node, other_seq in before:
            if node != self.node and other not in gone:
                self.remote.add(room, other, node, other_seq)
        result = self.table.join(conn, room, member, text, seq)
        if isinstance(result, Refusal):  # (its connection joined meanwhile: not here)
            self._forget_if_unused(room)
            return [self._error(conn, reply, result.code, result.msg, text), RoomLeft(room, member)]
        everyone = [(s, m) for m, (_, s) in self.remote.members.get(room, {}).items()]
        for other, other_conn in self.table.connections(room).items():
            other_joined = self.table.membership(other_conn)
            if other != member and other_joined is not None:
                everyone.append((other_joined.seq, other))
        log.info("member %s joined room %s (%d members)", clip(member), room, len(everyone) + 1)
        listed = members_body(room, [m for _, m in sorted(everyone)])
        actions: list[Action] = [
            Send(conn, self._ok(reply, text)),
            Send(conn, _frame(request_frame(Command.PRESENCE, "", member, listed), text), True),
        ]
        actions += self._notify_others(result, event_body(room, "join", member))
        return actions

    def abandoned(self, claim: RoomClaim) -> None:
        """``claim``'s connection closed before the cluster answered."""
        self._unjoining(claim.room)
        self._forget_if_unused(claim.room)

    def presence(self, event: str, room: str, member: str, node: str, seq: int) -> list[Action]:
        """Another node says ``member`` (on ``node``) joined or left ``room``:
        Presence to this node's members of it."""
        if event == "join":
            if node == self.node or (
                room not in self._joining and not self.table.connections(room)
            ):
                return []  # (a room this node has no member in any more)
            self.remote.add(room, member, node, seq)
            self._gone.get(room, set()).discard(member)
        elif not self.remote.remove(room, member):
            if room in self._joining:
                self._gone.setdefault(room, set()).add(member)
            return []
        else:
            self._calls.drop_answer(_call_key(room, member))  # local offerers' calls to it
        about = Membership(room, member, seq, False)
        return self._notify_others(about, event_body(room, event, member))

    def deliver(
        self, node: str, source: str, target: str, frame: Frame
    ) -> tuple[ConnId | None, int]:
        """A relay from member ``source`` on ``node`` to this node's ``target``
        (both ``room "\n" member``): the connection to write it to, or None
        and why (404 gone, 403 not its call)."""
        room, _, target_id = target.partition("\n")
        source_room, _, source_id = source.partition("\n")
        conn = self.table.conn_of(room, target_id)
        quick = peek_request(frame)
        if conn is None or quick is None or source_room != room:
            return None, NOT_FOUND
        command = quick[0]
        if command is Command.OFFER:
            self.remote.record_call(room, target_id, source_id, node)
            return conn, OK
        if self._calls.touch(conn, _call_key(room, source_id)):
            return conn, OK  # the target offered to the source: its Answer and Candidates
        if command is Command.CANDIDATE:
            if self.remote.called(room, target_id, source_id):
                return conn, OK
            where = self.remote.where(room, source_id)
            joined = self.table.membership(conn)
            if where is not None and joined is not None and where[1] > joined.seq:
                # the pair's offerer by the mesh rule, trickling before its Offer
                self.remote.record_call(room, target_id, source_id, node)
                return conn, OK
        return None, FORBIDDEN

    def _relay_remote(
        self,
        conn: ConnId,
        joined: Membership,
        command: Command,
        target: str,
        remote: tuple[str, int],
        frame: Frame,
        text: bool,
    ) -> list[Action]:
        """A relay to ``target``, a member of the room on node ``remote[0]``."""
        room, member = joined.room, joined.member
        node, target_seq = remote
        reply = RESPONSE[command]
        allowed = (
            command is Command.OFFER
            or self.remote.called(room, member, target)
            or (
                command is Command.CANDIDATE
                and (self._calls.touch(conn, _call_key(room, target)) or joined.seq > target_seq)
            )
        )
        if not allowed:
            why = f"{clip(member)} and {clip(target)} have no call (the offer comes first)"
            return [self._error(conn, reply, FORBIDDEN, why, text)]
        if command is not Command.ANSWER and not self.remote.called(room, member, target):
            self._calls.start(conn, _call_key(room, target))  # this member's own call
        return [
            RemoteForward(
                conn, frame, ROOM, _call_key(room, member), _call_key(room, target), node, reply
            )
        ]

    def _unjoining(self, room: str) -> None:
        count = self._joining.get(room, 0) - 1
        if count > 0:
            self._joining[room] = count
        else:
            self._joining.pop(room, None)
            self._gone.pop(room, None)

    def _forget_if_unused(self, room: str) -> None:
        if room not in self._joining and not self.table.connections(room):
            self.remote.drop_room(room)

    def _notify_others(self, about: Membership, body: bytes) -> list[Action]:
        """A Presence with ``body`` to every member of ``about``'s room but itself."""
        actions: list[Action] = []
        for member, conn in self.table.connections(about.room).items():
            if member == about.member:
                continue
            other = self.table.membership(conn)
            text = other.text if other is not None else False
            raw = request_frame(Command.PRESENCE, about.member, member, body)
            actions.append(Send(conn, _frame(raw, text), True))
        return actions


def _call_key(room: str, member: str) -> str:
    return f"{room}\n{member}"
