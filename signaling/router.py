"""The signaling server's sans-I/O core: the registry and the routing rules.

The router never touches a socket, a clock or the event loop. The I/O layer
(:mod:`signaling.server`) tells it about connections and frames and performs
the actions it returns, in order. This keeps every rule testable without a
network, and the rules in one place.

Rules (codes are documented in the README):

- Answer peers connect on ``/register`` and register an ID with Init (1).
  A taken ID is refused with 409 and the first registration is kept.
- Offer peers connect on ``/offer``; their first Offer (3) or Candidate (4)
  binds their ``source`` ID to the connection so answers can be routed back.
- Requests are forwarded as the original frame (never re-encoded) to the
  target, and the sender is acknowledged with code 0 only once the frame has
  been handed to the target's connection; otherwise it gets 404.
- An answer peer that connected with a resume key (``/register?resume=K``)
  and drops has its ID held (:meth:`Router.disconnect` returns a
  :class:`Held`); while held, only a registration from a connection with the
  same key gets the ID back, others get 409. The router has no clock: the
  I/O layer calls :meth:`Router.release` when the grace period is over. A
  connection with the key may also take the ID over from a registered
  connection with the same key that the server has not yet seen drop.
- Responses (101-104) from peers are only logged, as in the Go demo.
- Calls belong to their callers (:mod:`signaling.calls`): an offer peer's
  Offer (or a Candidate before it, as pion's peers send them) starts a call
  with its target; an answer peer's Answer and Candidates reach an offer
  peer only if that offer peer called it. Anything else gets 403 and never
  reaches the other peer, whatever ``source`` and ``target`` say. A call
  ends when either side leaves or after :data:`~signaling.calls.IDLE_TICKS`
  of :meth:`Router.tick` without signaling.
- Anything malformed is answered with 400 and the connection stays usable.
- A connection opened with a token (see :mod:`proto.tokens`) may only
  register, or bind as an offer peer, the token's ID (403 otherwise); a
  room token only joins its room, on ``/room``.
- Rooms (``/room``, commands 5-7 and the relay among members) follow
  :mod:`signaling.room_rules`; commands 5-7 elsewhere get 403.
- In a cluster (a :class:`~signaling.registry.ClusterRegistry`), an ID is
  claimed across the cluster (:class:`Claim`, then :meth:`Router.claimed`)
  before a connection registers or binds it; a target that is not on this
  node is looked for on the others (:class:`RemoteForward`, answered by
  :meth:`Router.remote_result`), and frames from other nodes come in through
  :meth:`Router.deliver_remote`. An answer peer's Answer or Candidate to an
  offer peer that is neither here nor known to have called it from another
  node gets 403 (it has not called it, wherever it is). The IDs that stop
  being this node's are listed by :meth:`Router.take_freed` for the I/O
  layer to release.
"""

from __future__ import annotations

import logging

from rtc_signal.proto.commands import Command
from rtc_signal.proto.errors import ProtocolError
from rtc_signal.proto.routing import peek_request
from rtc_signal.signaling.actions import (
    BAD_REQUEST,
    CONFLICT,
    FORBIDDEN,
    LOGGED_REFUSALS,
    NOT_FOUND,
    OK,
    REFUSALS_PER_LINE,
    RESPONSE,
    TOO_LARGE,
    TOO_MANY_REQUESTS,
    Action,
    Claim,
    ConnId,
    Forward,
    Frame,
    Held,
    Path,
    RemoteForward,
    Replies,
    Send,
    peek_command,
    reply_to,
    wire_size,
)
from rtc_signal.signaling.calls import CallTable
from rtc_signal.signaling.limits import DEFAULT_MAX_FRAME
from rtc_signal.signaling.logtext import clip
from rtc_signal.signaling.registry import ANSWER, OFFER, LocalRegistry, Registry
from rtc_signal.signaling.room_rules import RoomRules
from rtc_signal.signaling.rooms import DEFAULT_MAX_ROOM_SIZE
from rtc_signal.signaling.router_cluster import ClusterRouting
from rtc_signal.signaling.router_state import ConnState, Hold, RouterStats, not_token_id

log = logging.getLogger(__name__)

# (module globals: the hot path's lookups)
_OFFER_PATH, _REGISTER_PATH = Path.OFFER, Path.REGISTER
_ANSWER, _OFFER, _CANDIDATE = Command.ANSWER, Command.OFFER, Command.CANDIDATE
_RESPONSE = RESPONSE

__all__ = [
    "BAD_REQUEST",
    "CONFLICT",
    "FORBIDDEN",
    "NOT_FOUND",
    "OK",
    "TOO_LARGE",
    "TOO_MANY_REQUESTS",
    "Action",
    "Claim",
    "ConnId",
    "Forward",
    "Frame",
    "Held",
    "Path",
    "RemoteForward",
    "Router",
    "RouterStats",
    "Send",
]


class Router(ClusterRouting):
    """Registry of peers and routing of envelopes between their connections."""

    def __init__(
        self,
        max_frame: int = DEFAULT_MAX_FRAME,
        max_room_size: int = DEFAULT_MAX_ROOM_SIZE,
        registry: Registry | None = None,
    ) -> None:
        self.max_frame = max_frame
        self.registry: Registry = LocalRegistry() if registry is None else registry
        self._clustered = self.registry.clustered
        #: claims under way, (kind, ID) -> the connection claiming
        self._claiming: dict[tuple[str, str], ConnId] = {}
        #: (kind, ID) no longer this node's, for the I/O layer (take_freed)
        self._freed: list[tuple[str, str]] = []
        self._conns: dict[ConnId, ConnState] = {}
        self._answers: dict[str, ConnId] = {}
        self._offers: dict[str, ConnId] = {}
        self._replies = Replies()
        #: the acks (code 0) by response command, text and binary (the hot path's)
        self._text_acks: dict[Command, Frame] = {}
        self._binary_acks: dict[Command, Frame] = {}
        self.stats = RouterStats()
        #: answer-peer IDs held for a reconnect, by ID
        self._held: dict[str, Hold] = {}
        self._hold_tokens = 0
        self._calls = CallTable()
        node = getattr(self.registry, "node", None) if self._clustered else None
        self._rooms = RoomRules(self._error, self._ack, max_room_size, node)

    # -- connection life cycle -------------------------------------------

    def connect(
        self,
        conn: ConnId,
        path: Path,
        resume: str | None = None,
        allowed_id: str | None = None,
        allowed_room: str | None = None,
    ) -> None:
        """A new connection; ``resume`` is the resume key it came with (/register),
        ``allowed_id`` the ID its token grants (None: any), in ``allowed_room``
        for a room token."""
        self._conns[conn] = ConnState(
            path, resume=resume or None, allowed_id=allowed_id, allowed_room=allowed_room
        )
        connections = self.stats.connections
        connections[path] = connections.get(path, 0) + 1

    def leave_room(self, conn: ConnId) -> list[Action]:
        """``conn`` (closed) leaves its room: the Presence notices to the others.
        Call before :meth:`disconnect`, which forgets it silently."""
        return self._rooms.leave(conn)

    def disconnect(
        self, conn: ConnId, hold: bool = True, grace: float | None = None
    ) -> Held | None:
        """Forget a closed connection and every ID registered through it.

        An answer peer with a resume key keeps its ID, held, unless ``hold``
        is false (it closed cleanly: it is leaving, not dropping); the result
        says which ID, for :meth:`release`. ``grace``: how long the I/O layer
        will hold it, for the refusal others get meanwhile.
        """
        state = self._conns.get(conn)
        held = self._disconnect(conn, hold, grace)
        if state is not None and state.claimed is not None and held is None:
            self._freed.append((ANSWER if state.path is Path.REGISTER else OFFER, state.claimed))
        return held

    def _disconnect(self, conn: ConnId, hold: bool, grace: float | None) -> Held | None:
        state = self._conns.pop(conn, None)
        if state is None:
            return None
        if state.path is Path.OFFER:
            self._calls.drop_offer(conn)
        if state.path is Path.ROOM:
            self._rooms.leave(conn)
        if state.peer_id is None:
            return None
        registry = self._answers if state.path is Path.REGISTER else self._offers
        if registry.get(state.peer_id) != conn:
            return None
        del registry[state.peer_id]
        if hold and state.path is Path.REGISTER and state.resume is not None:
            self._hold_tokens += 1
            self._held[state.peer_id] = Hold(state.resume, self._hold_tokens, grace)
            log.info("answer peer %s left; its ID is held for it to reconnect", clip(state.peer_id))
            return Held(state.peer_id, self._hold_tokens)  # its calls wait for it too
        if state.path is Path.REGISTER:
            self._calls.drop_answer(state.peer_id)
            self.registry.drop_answer(state.peer_id)
        log.info(
            "%s peer %s left",
            "answer" if state.path is Path.REGISTER else "offer",
            clip(state.peer_id),
        )
        return None

    def release(self, held: Held) -> bool:
        """The grace period of ``held`` is over: free the ID unless it was
        taken back (or held again since). True if it was released."""
        hold = self._held.get(held.peer_id)
        if hold is None or hold.token != held.token:
            return False
        del self._held[held.peer_id]
        self._calls.drop_answer(held.peer_id)
        self.registry.drop_answer(held.peer_id)
        if self._clustered:
            self._freed.append((ANSWER, held.peer_id))
        log.info("answer peer %s did not come back; its ID is free", clip(held.peer_id))
        return True

    def tick(self) -> int:
        """A unit of time passed (the I/O layer calls this on a timer): calls
        without signaling for :data:`~signaling.calls.IDLE_TICKS` ticks end.
        Returns how many ended."""
        return self._calls.tick() + self._rooms.tick() + self.registry.tick()

    # -- queries -----------------------------------------------------------

    def answer_peers(self) -> list[str]:
        return sorted(self._answers)

    def held_peers(self) -> list[str]:
        """Answer-peer IDs held for a reconnect."""
        return sorted(self._held)

    def offer_peers(self) -> list[str]:
        return sorted(self._offers)

    def calls(self) -> int:
        """How many calls (offer connection, answer peer; and in rooms) are known."""
        return len(self._calls) + self._rooms.calls()

    def rooms(self) -> dict[str, list[str]]:
        """The rooms and their members, oldest first."""
        table = self._rooms.table
        return {room: table.members(room) for room in table.rooms()}

    def room_counts(self) -> tuple[int, int]:
        """(rooms, members of all rooms), without listing them."""
        table = self._rooms.table
        return len(table), table.member_count()

    def answer_count(self) -> int:
        """How many answer peers are registered (without sorting their IDs)."""
        return len(self._answers)

    def offer_count(self) -> int:
        return len(self._offers)

    def held_count(self) -> int:
        return len(self._held)

    def connection_paths(self) -> dict[Path, int]:
        """Open connections by path (every path, 0 included)."""
        counts = dict.fromkeys(Path, 0)
        for state in self._conns.values():
            counts[state.path] += 1
        return counts

    def peer_id(self, conn: ConnId) -> str | None:
        state = self._conns.get(conn)
        if state is None or state.path is not Path.ROOM:
            return None if state is None else state.peer_id
        return self._rooms.member_id(conn)

    def __len__(self) -> int:
        return len(self._conns)

    # -- frames ------------------------------------------------------------

    def receive(self, conn: ConnId, frame: Frame) -> list[Action]:
        """Handle one frame from ``conn``; return what to send, in order."""
        state = self._conns.get(conn)
        if state is None:
            # Forgotten by forward_failed(): its socket is dead, but the server
            # may still be draining frames it had queued. Drop them.
            return []
        stats = self.stats
        stats.frames += 1
        text = isinstance(frame, str)
        # (wire_size, inline for the common case: bytes or ASCII text)
        size = len(frame) if not text or frame.isascii() else wire_size(frame)
        by_command = stats.by_command
        if size > self.max_frame:
            command = peek_command(frame)
            by_command[command] = by_command.get(command, 0) + 1
            return [
                self._error(
                    conn,
                    reply_to(command),
                    TOO_LARGE,
                    f"frame of {size} bytes exceeds the {self.max_frame}-byte limit",
                    text,
                )
            ]
        quick = peek_request(frame)
        if quick is not None:
            command, source, target = quick
            by_command[command] = by_command.get(command, 0) + 1
            if source == state.peer_id and state.allowed_room is None:
                # The relay's hot path: a bound peer signals a peer connected
                # here that it may reach (the outcome _route would reach with
                # more steps; anything else, refusals included, goes there).
                path = state.path
                target_conn: ConnId | None = None
                if path is _OFFER_PATH:
                    if command is _OFFER or command is _CANDIDATE:
                        target_conn = self._answers.get(target)
                        if target_conn is not None and self._offers.get(source) == conn:
                            self._calls.start(conn, target)  # (_check_call's, for /offer)
                        else:
                            target_conn = None
                elif path is _REGISTER_PATH and (command is _ANSWER or command is _CANDIDATE):
                    target_conn = self._offers.get(target)
                    if target_conn is not None and not self._calls.touch(target_conn, source):
                        target_conn = None
                if target_conn is not None:
                    stats.forwarded += 1
                    by_code = stats.by_code
                    # _ack's work, inlined with its own cache in front of
                    # Replies': calling _ack here measured 0.75 us more per
                    # relayed frame (12.3 -> 13.1 us for Router.receive)
                    by_code[OK] = by_code.get(OK, 0) + 1
                    reply = _RESPONSE[command]
                    ack = (self._text_acks if text else self._binary_acks).get(reply)
                    if ack is None:
                        ack = self._replies.get(reply, OK, "ok", text)
                        (self._text_acks if text else self._binary_acks)[reply] = ack
                    return [Forward(target_conn, frame, conn, ack, reply, target)]
        else:
            # The full decoder (pydantic) only for what the fast reader
            # declines: responses and malformed frames. Imported here so that
            # the router alone never needs pydantic up front; the server
            # imports it right after it starts listening (server.start).
            from rtc_signal.proto.envelope import decode

            try:
                envelope = decode(frame)
            except ProtocolError as exc:
                by_command[exc.command] = by_command.get(exc.command, 0) + 1
                return [self._error(conn, reply_to(exc.command), exc.code, str(exc), text)]
            command = envelope.command
            by_command[command] = by_command.get(command, 0) + 1
            if not command.is_request:
                response = envelope.response
                log.debug(
                    "conn %s: response %d code=%d msg=%s",
                    conn,
                    command,
                    response.code,
                    clip(response.msg),
                )
                return []
            request = envelope.request
            source, target = request.source, request.target
        if state.path is Path.ROOM:
            grant = (state.allowed_id, state.allowed_room)
            actions = self._rooms.receive(conn, command, source, target, frame, text, grant)
            self.stats.forwarded += isinstance(actions[0], Forward)
            return actions
        if command >= Command.JOIN or state.allowed_room is not None:
            why = "rooms are on /room" if command >= Command.JOIN else "a room token is for /room"
            return [self._error(conn, RESPONSE[command], FORBIDDEN, why, text)]
        if command is Command.INIT:
            return [self._register(conn, state, source, frame, text)]
        return self._route(conn, state, command, source, target, frame, text)

    def handover_target(self, conn: ConnId, frame: Frame) -> str | None:
        """The answer peer that ``frame``, the first frame of ``conn``, calls,
        if ``conn`` is a fresh ``/offer`` connection of a cluster node and no
        peer here holds that ID: the server may then hand the connection to
        the sibling worker that holds it (signaling/handover.py). None for
        anything else (which is then routed as usual, errors included)."""
        state = self._conns.get(conn)
        if (
            not self._clustered
            or state is None
            or state.path is not Path.OFFER
            or state.peer_id is not None
            or state.claimed is not None
            or wire_size(frame) > self.max_frame
        ):
            return None
        quick = peek_request(frame)
        if quick is None or quick[0] is not Command.OFFER or not quick[1]:
            return None
        target = quick[2]
        return None if not target or target in self._answers else target

    def refuse(self, conn: ConnId, frame: Frame, code: int, msg: str) -> Send:
        """An error reply to ``frame`` that the I/O layer drops unrouted (e.g.
        over the rate limit), in the frame's response command and type."""
        quick = peek_request(frame)
        command = quick[0] if quick is not None else peek_command(frame)
        # not logged here: the I/O layer logs once per episode, not per frame
        return self._error(conn, reply_to(command), code, msg, isinstance(frame, str), log_it=False)

    def forward_failed(self, action: Forward) -> list[Action]:
        """The target of ``action`` was closed before the frame reached it."""
        notices = self.leave_room(action.target)
        self.disconnect(action.target)
        return [
            self._error(
                action.sender,
                action.reply,
                NOT_FOUND,
                f"peer {clip(action.target_id)} has gone",
                isinstance(action.frame, str),
            ),
            *notices,
        ]

    # -- rules ---------------------------------------------------------------

    def _register(
        self, conn: ConnId, state: ConnState, peer_id: str, frame: Frame, text: bool
    ) -> Action:
        reply = Command.INIT_RESPONSE
        if state.path is not Path.REGISTER:
            return self._error(conn, reply, FORBIDDEN, "register on /register, not /offer", text)
        if not peer_id:
            return self._error(conn, reply, BAD_REQUEST, "init needs a non-empty source ID", text)
        if state.allowed_id is not None and peer_id != state.allowed_id:
            return self._error(conn, reply, FORBIDDEN, not_token_id(peer_id, state), text)
        if state.peer_id is not None and state.peer_id != peer_id:
            return self._error(
                conn,
                reply,
                CONFLICT,
                f"this connection is already registered as {clip(state.peer_id)}",
                text,
            )
        holder = self._answers.get(peer_id)
        if holder is not None and holder != conn and not self._take_over(holder, state):
            return self._error(
                conn, reply, CONFLICT, f"ID {clip(peer_id)} is already registered", text
            )
        hold = self._held.get(peer_id)
        if hold is not None and hold.resume != state.resume:
            return self._error(
                conn,
                reply,
                CONFLICT,
                f"ID {clip(peer_id)} is held for its reconnecting peer"
                + ("" if hold.grace is None else f" (up to {hold.grace:g} s after it dropped)"),
                text,
            )
        if self._clustered and state.claimed != peer_id:
            return self._claim(conn, state, ANSWER, peer_id, frame, reply)
        if hold is not None:
            del self._held[peer_id]
            log.info("answer peer %s came back", clip(peer_id))
        self._answers[peer_id] = conn
        state.peer_id = peer_id
        log.info("answer peer %s registered", clip(peer_id))
        return self._ok(conn, reply, text)

    def _take_over(self, holder: ConnId, state: ConnState) -> bool:
        """Let ``state`` (same resume key) replace ``holder``, a connection of
        the same peer that dropped without the server noticing yet (it would
        otherwise hold the ID until the keepalive times it out)."""
        old = self._conns.get(holder)
        if old is None or state.resume is None or old.resume != state.resume:
            return False
        log.info("answer peer %s reconnected before its old connection closed", clip(old.peer_id))
        old.peer_id = None  # its frames now need a registration; its close frees nothing
        old.claimed = None
        return True

    def _route(
        self,
        conn: ConnId,
        state: ConnState,
        command: Command,
        source: str,
        target: str,
        frame: Frame,
        text: bool,
    ) -> list[Action]:
        reply = RESPONSE[command]
        if state.path is Path.REGISTER:
            if command is Command.OFFER:
                return [self._error(conn, reply, FORBIDDEN, "offers are sent on /offer", text)]
            if state.peer_id is None:
                return [self._error(conn, reply, FORBIDDEN, "register (command 1) first", text)]
            if source != state.peer_id:
                return [
                    self._error(
                        conn,
                        reply,
                        FORBIDDEN,
                        f"source {clip(source)} is not this connection's ID {clip(state.peer_id)}",
                        text,
                    )
                ]
            registry, kind = self._offers, "offer"
            target_conn = registry.get(target)
            if target_conn is None and self._clustered:
                node = self.registry.remote_caller(state.peer_id, target)
                if node is None:
                    why = f"{clip(target)} has not called {clip(state.peer_id)}"
                    return [self._error(conn, reply, FORBIDDEN, why, text)]
                self.stats.forwarded += 1
                return [RemoteForward(conn, frame, OFFER, source, target, node, reply)]
        else:
            if command is Command.ANSWER:
                return [self._error(conn, reply, FORBIDDEN, "answers are sent on /register", text)]
            if not source:
                return [
                    self._error(conn, reply, BAD_REQUEST, "a non-empty source ID is needed", text)
                ]
            if state.peer_id is not None and source != state.peer_id:
                return [
                    self._error(
                        conn,
                        reply,
                        FORBIDDEN,
                        f"source {clip(source)} is not this connection's ID {clip(state.peer_id)}",
                        text,
                    )
                ]
            if state.peer_id is None and state.allowed_id not in (None, source):
                return [self._error(conn, reply, FORBIDDEN, not_token_id(source, state), text)]
            holder = self._offers.get(source)
            if holder is not None and holder != conn:
                return [
                    self._error(conn, reply, CONFLICT, f"ID {clip(source)} is already in use", text)
                ]
            if state.peer_id is None and self._clustered and state.claimed != source:
                return [self._claim(conn, state, OFFER, source, frame, reply)]
            registry, kind = self._answers, "answer"
            target_conn = registry.get(target)
            if target_conn is None and self._clustered:
                if state.peer_id is None:
                    state.peer_id = source
                    self._offers[source] = conn
                    log.info("offer peer %s calls %s (on another node)", clip(source), clip(target))
                self._calls.start(conn, target)
                self.stats.forwarded += 1
                return [RemoteForward(conn, frame, ANSWER, source, target, None, reply)]
        if target_conn is None:
            return [
                self._error(
                    conn, reply, NOT_FOUND, f"no {kind} peer is registered as {clip(target)}", text
                )
            ]
        refused = self._check_call(conn, state, target, target_conn)
        if refused is not None:
            return [self._error(conn, reply, FORBIDDEN, refused, text)]
        if state.path is Path.OFFER and state.peer_id is None:
            state.peer_id = source
            self._offers[source] = conn
            log.info("offer peer %s calls %s", clip(source), clip(target))
        self.stats.forwarded += 1
        return [Forward(target_conn, frame, conn, self._ack(reply, text), reply, target)]

    def _check_call(
        self, conn: ConnId, state: ConnState, target: str, target_conn: ConnId
    ) -> str | None:
        """Start or check the call this request belongs to; why not, if refused."""
        if state.path is Path.OFFER:
            # The caller's own call (its source is bound to this connection):
            # a Candidate may come before the Offer, as pion's peers send them.
            self._calls.start(conn, target)
            return None
        assert state.peer_id is not None  # _route checked the registration
        if self._calls.touch(target_conn, state.peer_id):
            return None
        return f"{clip(target)} has not called {clip(state.peer_id)}"

    def _ack(self, command: Command, text: bool) -> Frame:
        self.stats.by_code[OK] = self.stats.by_code.get(OK, 0) + 1
        return self._replies.get(command, OK, "ok", text)

    def _ok(self, conn: ConnId, command: Command, text: bool) -> Send:
        return Send(conn, self._ack(command, text))

    def _error(
        self, conn: ConnId, reply: Command, code: int, msg: str, text: bool, log_it: bool = True
    ) -> Send:
        """An error Response in the ``reply`` command (like :meth:`_ok`, not a request)."""
        self.stats.errors += 1
        self.stats.by_code[code] = self.stats.by_code.get(code, 0) + 1
        if log_it:
            state = self._conns.get(conn)
            refusals = 0 if state is None else state.refusals + 1
            if state is not None:
                state.refusals = refusals
            # A client that keeps sending what is refused would fill the log:
            # its first refusals are logged, then one line per hundred.
            if refusals <= LOGGED_REFUSALS:
                log.info("conn %s: refusing with %d: %s", conn, code, msg)
            elif refusals % REFUSALS_PER_LINE == 0:
                log.info(
                    "conn %s: refusing with %d: %s (%d refusals of this connection so far)",
                    conn,
                    code,
                    msg,
                    refusals,
                )
        return Send(conn, self._replies.get(reply, code, msg, text))
