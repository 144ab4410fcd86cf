"""The router's cluster rules (a :class:`~signaling.registry.ClusterRegistry`):
claims of IDs across the nodes, frames to and from peers on other nodes,
and what a node holds. Still sans-I/O: the I/O layer
(:mod:`signaling.cluster`) runs the Redis commands and reports back.

A mixin of :class:`signaling.router.Router`, kept apart so that the 1:1 and
room rules read without the cluster's.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from rtc_signal.proto.commands import Command
from rtc_signal.signaling.actions import (
    CLAIMED,
    CONFLICT,
    FORBIDDEN,
    NOT_FOUND,
    OK,
    ROOM,
    SERVICE_UNAVAILABLE,
    TAKEN,
    Action,
    Claim,
    ConnId,
    Frame,
    Path,
    RoomClaim,
    RoomLeft,
    RoomOutcome,
    Send,
)
from rtc_signal.signaling.calls import CallTable
from rtc_signal.signaling.logtext import clip
from rtc_signal.signaling.registry import ANSWER, OFFER, Registry
from rtc_signal.signaling.room_rules import RoomRules
from rtc_signal.signaling.router_state import ConnState, Hold, RouterStats

log = logging.getLogger("rtc_signal.signaling.router")

UNAVAILABLE = "the cluster is unavailable (its Redis is unreachable); try again later"


class ClusterRouting:
    """Router methods for a clustered registry (see the module docstring)."""

    # (the Router's state and helpers these methods use)
    registry: Registry
    stats: RouterStats
    _claiming: dict[tuple[str, str], ConnId]
    _freed: list[tuple[str, str]]
    _conns: dict[ConnId, ConnState]
    _answers: dict[str, ConnId]
    _offers: dict[str, ConnId]
    _held: dict[str, Hold]
    _calls: CallTable
    _rooms: RoomRules

    if TYPE_CHECKING:

        def receive(self, conn: ConnId, frame: Frame) -> list[Action]: ...

        def _ok(self, conn: ConnId, command: Command, text: bool) -> Send: ...

        def _error(
            self,
            conn: ConnId,
            reply: Command,
            code: int,
            msg: str,
            text: bool,
            log_it: bool = True,
        ) -> Send: ...

    def claimed(self, claim: Claim, outcome: str) -> list[Action]:
        """The cluster's answer to ``claim`` (CLAIMED, TAKEN or UNAVAILABLE;
        LOCAL for an offer ID the server made up): the claim's frame handled
        again, or its refusal (409, 503).

        With the cluster unavailable (Redis down), an offer peer binds its
        ID on this node alone, so that calls between peers of this node go
        on; the I/O layer claims it with every other ID once Redis is back.
        """
        key = (claim.kind, claim.peer_id)
        if self._claiming.get(key) == claim.conn:
            del self._claiming[key]
        state = self._conns.get(claim.conn)
        if state is None:  # closed while claiming
            if outcome == CLAIMED:
                self._freed.append(key)
            return []
        text = isinstance(claim.frame, str)
        if outcome == CLAIMED or (outcome != TAKEN and claim.kind == OFFER):
            state.claimed = claim.peer_id
            self.stats.frames -= 1  # (counted when it first came)
            return self.receive(claim.conn, claim.frame)
        if outcome == TAKEN:
            what = "registered" if claim.kind == ANSWER else "in use"
            msg = f"ID {clip(claim.peer_id)} is already {what}"
            return [self._error(claim.conn, claim.reply, CONFLICT, msg, text)]
        return [self._error(claim.conn, claim.reply, SERVICE_UNAVAILABLE, UNAVAILABLE, text)]

    def room_claimed(self, claim: RoomClaim, outcome: RoomOutcome) -> list[Action]:
        """The cluster's answer to a :class:`RoomClaim`: a refusal code (409,
        503), or (the member's join seq, the members before it: (member,
        node, seq), oldest first). A connection that closed meanwhile gives
        its place back (:class:`RoomLeft`)."""
        if claim.conn not in self._conns:
            self._rooms.abandoned(claim)
            return [RoomLeft(claim.room, claim.member)] if isinstance(outcome, tuple) else []
        return self._rooms.claimed(claim, outcome)

    def room_presence(
        self, event: str, room: str, member: str, node: str, seq: int
    ) -> list[Action]:
        """Another node's member ``member`` joined or left ``room`` (``event``):
        the Presence notices to this node's members of it."""
        return self._rooms.presence(event, room, member, node, seq)

    def remote_result(
        self, sender: ConnId, reply: Command, text: bool, code: int, target_id: str
    ) -> Send:
        """The reply to a :class:`RemoteForward` of ``sender``'s once its
        outcome is known: ``code`` 0 (handed over), 403, 404 or 503."""
        if code == OK:
            return self._ok(sender, reply, text)
        room, newline, member = target_id.partition("\n")
        if newline:  # a room member's (ROOM): room "\n" member
            if code == FORBIDDEN:
                msg = f"{clip(member)} and this member have no call (the offer comes first)"
            elif code == NOT_FOUND:
                msg = f"no member {clip(member)} in room {room}"
            else:
                code, msg = SERVICE_UNAVAILABLE, UNAVAILABLE
            return self._error(sender, reply, code, msg, text)
        if code == FORBIDDEN:
            msg = f"{clip(target_id)} has not called this peer"
        elif code == NOT_FOUND:
            msg = f"no peer is registered as {clip(target_id)}"
        else:
            code, msg = SERVICE_UNAVAILABLE, UNAVAILABLE
        return self._error(sender, reply, code, msg, text)

    def deliver_remote(
        self, node: str, kind: str, source_id: str, target_id: str, frame: Frame = b""
    ) -> tuple[ConnId | None, int]:
        """A frame from ``source_id`` on ``node`` for this node's ``target_id``
        (of ``kind``): the connection to write it to, or None and why (404,
        or 403 for an offer peer that did not call ``source_id``, or a room
        member with no call with it)."""
        if kind == ROOM:
            conn, code = self._rooms.deliver(node, source_id, target_id, frame)
            self.stats.forwarded += conn is not None
            return conn, code
        if kind == ANSWER:
            conn = self._answers.get(target_id)
            if conn is None:
                return None, NOT_FOUND
            self.registry.remote_call(target_id, source_id, node)
        else:
            conn = self._offers.get(target_id)
            if conn is None:
                return None, NOT_FOUND
            if not self._calls.touch(conn, source_id):
                return None, FORBIDDEN
        self.stats.forwarded += 1
        return conn, OK

    def moved(self, peer_id: str) -> None:
        """Answer peer ``peer_id`` resumed on another node (its resume key):
        forget its hold here, or the connection it left, without freeing
        the ID (it is the other node's now)."""
        self._held.pop(peer_id, None)
        conn = self._answers.pop(peer_id, None)
        if conn is not None:
            state = self._conns[conn]
            state.peer_id = state.claimed = None
        self._calls.drop_answer(peer_id)
        self.registry.drop_answer(peer_id)
        log.info("answer peer %s resumed on another node", clip(peer_id))

    def take_freed(self) -> list[tuple[str, str]]:
        """The (kind, ID) that stopped being this node's since the last call."""
        freed, self._freed = self._freed, []
        return freed

    def local_ids(self) -> list[tuple[str, str, str | None]]:
        """Every (kind, ID, resume key) this node holds: registered, held and
        bound offer IDs (to claim again after Redis lost them)."""
        ids: list[tuple[str, str, str | None]] = []
        for state in self._conns.values():
            if state.claimed is not None:
                kind = ANSWER if state.path is Path.REGISTER else OFFER
                ids.append((kind, state.claimed, state.resume))
        ids.extend((ANSWER, peer_id, hold.resume) for peer_id, hold in self._held.items())
        return ids

    def local_members(self) -> list[tuple[str, str, int]]:
        """Every (room, member, join seq) of this node's connections (to put
        back after Redis lost them)."""
        members: list[tuple[str, str, int]] = []
        for conn, state in self._conns.items():
            joined = self._rooms.table.membership(conn) if state.path is Path.ROOM else None
            if joined is not None:
                members.append((joined.room, joined.member, joined.seq))
        return members

    def _claim(
        self, conn: ConnId, state: ConnState, kind: str, peer_id: str, frame: Frame, reply: Command
    ) -> Action:
        """Claim ``peer_id`` across the cluster before ``conn`` uses it."""
        key = (kind, peer_id)
        claimer = self._claiming.get(key)
        if claimer is not None and claimer != conn:
            what = "registered" if kind == ANSWER else "in use"
            msg = f"ID {clip(peer_id)} is already {what}"
            return self._error(conn, reply, CONFLICT, msg, isinstance(frame, str))
        self._claiming[key] = conn
        return Claim(conn, kind, peer_id, state.resume, frame, reply)
