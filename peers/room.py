"""Rooms: join a named room and talk to every member over a WebRTC mesh.

::

    from rtc_signal.peers import join, MemberJoined, MemberLeft, RoomMessage

    async with join("ws://127.0.0.1:18080", "lobby", "alice") as room:
        await room.send("hello everyone")          # to every connected member
        async for event in room:                    # until the room ends
            match event:
                case RoomMessage(sender, text):
                    print(f"{sender}: {text}")
                case MemberJoined(member) | MemberLeft(member):
                    print(member, type(event).__name__)

:func:`join` connects to the signaling server's ``/room`` path, joins the
room (``server`` is a URL or a :class:`~peers.session.PeerConfig`, whose ICE
settings, token and timeouts are used) and yields a :class:`Room` once the
server has sent the member list. It does not wait for the peer connections:
:class:`MemberConnected` comes for each member once its data channel is open
(:meth:`Room.wait_connected` waits for some). Leaving the ``async with``
block delivers what was sent (bounded), sends Leave and closes every
connection.

Events, in the order they happen: :class:`MemberJoined` (a member joined
after us), :class:`MemberConnected`, :class:`RoomMessage` (a text message on
that member's ``chat`` channel), :class:`MemberLeft`. Members already in the
room are in :attr:`Room.members` at once and get :class:`MemberConnected`
only. Iterating ends with :class:`~peers.errors.SignalingError` if the
signaling server goes away (the room is over for us: the server has told
the others we left).

Who connects to whom is decided by :class:`peers.mesh.Mesh` (the later
joiner offers); this module only carries its actions out with aiortc: one
RTCPeerConnection per other member with a data channel labelled ``chat``,
complete candidates in the SDP (no trickling; candidates trickled by
browsers are applied), every wait bounded by the config's
``connect_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any

from aiortc import RTCPeerConnection

from rtc_signal.peers.channel import Channel
from rtc_signal.peers.errors import (
    ChannelClosed,
    ConnectTimeout,
    IdTaken,
    PeerError,
    Refused,
    RoomFull,
    SignalingError,
)
from rtc_signal.peers.ice import restrict_host_addresses
from rtc_signal.peers.mesh import (
    AcceptOffer,
    Action,
    AddCandidate,
    ApplyAnswer,
    CloseLink,
    MakeOffer,
    Mesh,
    Notice,
    Notify,
)
from rtc_signal.peers.session import PeerConfig, _description_body, _Negotiation
from rtc_signal.peers.signaling_client import SignalingClient
from rtc_signal.peers.stream import close_after_delivery
from rtc_signal.proto import Command, Envelope, ProtocolError, decode_description
from rtc_signal.proto.rooms import is_room_name, member_id_problem, parse_presence

log = logging.getLogger(__name__)

CHAT_LABEL = "chat"
ROOM_PATH = "/room"
#: events (mostly messages) waiting to be read before the data channels are
#: no longer read (SCTP then holds the senders back)
MAX_QUEUED_EVENTS = 1024
#: seconds to deliver what was sent when leaving, and for the Leave's response
LEAVE_TIMEOUT = 5.0


@dataclass(frozen=True)
class MemberJoined:
    """``member`` joined the room after us (it will connect to us)."""

    member: str


@dataclass(frozen=True)
class MemberConnected:
    """Our peer connection to ``member`` is open: messages flow both ways."""

    member: str


@dataclass(frozen=True)
class MemberLeft:
    """``member`` left the room (or the server dropped it); its connection is closed."""

    member: str


@dataclass(frozen=True)
class RoomMessage:
    """A text message ``sender`` sent us (binary ones are decoded as UTF-8)."""

    sender: str
    text: str


RoomEvent = MemberJoined | MemberConnected | MemberLeft | RoomMessage


def new_member_id() -> str:
    """A random short member ID."""
    return f"m-{secrets.token_hex(3)}"


def check_room_name(room: str) -> None:
    """PeerError unless the server would accept ``room`` as a room name."""
    if not is_room_name(room):
        raise PeerError(f"bad room name {room[:80]!r}: 1-64 of A-Z a-z 0-9 . _ -")


def check_member_id(peer_id: str) -> None:
    """PeerError unless the server would accept ``peer_id`` as a member ID."""
    problem = member_id_problem(peer_id)
    if problem is not None:
        raise PeerError(problem)


class _Link:
    """One peer connection to a member, and the task that runs it."""

    def __init__(self, member: str, number: int, pc: RTCPeerConnection) -> None:
        self.member = member
        self.number = number
        self.pc = pc
        self.negotiation = _Negotiation(pc, member)
        #: ("answer" | "candidate", body) from the member, in order
        self.inbox: asyncio.Queue[tuple[str, bytes | None]] = asyncio.Queue()
        self.channel: Channel | None = None
        self.task: asyncio.Task[None] | None = None
        self.failed = asyncio.Event()
        pc.on("connectionstatechange", self._on_state)

    def _on_state(self) -> None:
        if self.pc.connectionState == "failed":
            self.failed.set()


class Room:
    """A room we are a member of (made by :func:`join`)."""

    def __init__(
        self, config: PeerConfig, name: str, peer_id: str, signaling: SignalingClient
    ) -> None:
        self.config = config
        self.name = name
        self.peer_id = peer_id
        self._signaling = signaling
        self._mesh = Mesh(peer_id)
        self._links: dict[int, _Link] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._events: asyncio.Queue[RoomEvent | None] = asyncio.Queue()
        self._room_for_events = asyncio.Event()
        self._room_for_events.set()
        self._listed = asyncio.Event()
        self._changed = asyncio.Event()
        self._ended: PeerError | None = None
        self._member = False  # our Join was accepted (and no Leave sent yet)

    # -- what the user sees --------------------------------------------------

    @property
    def members(self) -> list[str]:
        """The other members in the room (oldest first), connected or not."""
        return self._mesh.present()

    @property
    def connected(self) -> list[str]:
        """The members our connection to is open."""
        return self._mesh.connected()

    async def send(self, text: str) -> list[str]:
        """Send ``text`` to every connected member; the members it went to."""
        sent = []
        for member in self.connected:
            if await self.send_to(member, text):
                sent.append(member)
        return sent

    async def send_to(self, member: str, text: str) -> bool:
        """Send ``text`` to ``member`` only; False if we are not connected to it."""
        link = self._open_link(member)
        if link is None or link.channel is None:
            return False
        try:
            await link.channel.send(text)
        except ChannelClosed:
            return False
        return True

    async def next_event(self) -> RoomEvent:
        """The next event; SignalingError once the room has ended for us."""
        event = await self._events.get()
        if self._events.qsize() < MAX_QUEUED_EVENTS // 2:
            self._room_for_events.set()
        if event is None:
            self._events.put_nowait(None)  # keep reporting the end
            raise self._ended or SignalingError("left the room")
        return event

    async def __aiter__(self) -> AsyncIterator[RoomEvent]:
        while True:
            yield await self.next_event()

    async def wait_connected(self, count: int, timeout: float) -> None:
        """Wait until we are connected to at least ``count`` members;
        ConnectTimeout after ``timeout`` seconds. (Events still queue up for
        :meth:`next_event` meanwhile.)"""
        try:
            async with asyncio.timeout(timeout):
                while len(self.connected) < count:
                    if self._ended is not None:
                        raise self._ended
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise ConnectTimeout(
                f"connected to {len(self.connected)} of {count} members "
                f"({', '.join(self.connected) or 'none'}) after {timeout:g} s "
                f"in room {self.name!r}"
            ) from None

    # -- joining and leaving -------------------------------------------------

    async def _join(self) -> None:
        response = await self._signaling.request(Command.JOIN, self.peer_id, self.name, None)
        if not response.ok:
            what = f"joining room {self.name!r} as {self.peer_id!r}"
            refusal = {409: IdTaken, 503: RoomFull}.get(response.code, Refused)
            raise refusal(what, response.code, response.msg)
        self._member = True
        self._spawn(self._pump(), "room-signaling")
        try:
            await asyncio.wait_for(self._listed.wait(), self.config.connect_timeout)
        except TimeoutError:
            raise SignalingError(
                f"no member list within {self.config.connect_timeout:g} s of joining"
            ) from None
        if self._ended is not None:
            raise self._ended
        log.info("joined room %r as %r; members: %s", self.name, self.peer_id, self.members)

    async def _leave(self, graceful: bool) -> None:
        """Deliver what was sent (if ``graceful``), send Leave, close everything."""
        if graceful:
            channels = [
                link.channel
                for link in self._links.values()
                if link.channel is not None and link.channel.opened.is_set()
            ]
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(LEAVE_TIMEOUT):
                    await asyncio.gather(
                        *(self._deliver(channel) for channel in channels), return_exceptions=True
                    )
        if self._member and self._ended is None:
            self._member = False
            with contextlib.suppress(PeerError):
                await self._signaling.request(
                    Command.LEAVE, self.peer_id, self.name, None, timeout=LEAVE_TIMEOUT
                )
        self._apply(self._mesh.leave())
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @staticmethod
    async def _deliver(channel: Channel) -> None:
        await close_after_delivery(channel)

    # -- signaling -----------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _pump(self) -> None:
        """Feed what the server sends us to the mesh, until it goes away."""
        try:
            async for envelope in self._signaling.requests():
                await self._handle(envelope)
        except PeerError as exc:
            self._ended = exc if isinstance(exc, SignalingError) else SignalingError(str(exc))
        finally:
            if self._ended is None:
                self._ended = SignalingError("left the room")
            self._listed.set()
            self._changed.set()
            self._events.put_nowait(None)

    async def _handle(self, envelope: Envelope) -> None:
        command, request = envelope.command, envelope.request
        if request.target != self.peer_id:
            log.warning("ignoring %s addressed to %r", command.name, request.target[:64])
            return
        await self._signaling.acknowledge(command)
        source = request.source
        try:
            if command is Command.PRESENCE:
                presence = parse_presence(request.body)
                if presence.room != self.name:
                    log.warning("ignoring presence for room %r", presence.room[:64])
                elif presence.event == "members":
                    self._apply(self._mesh.joined(presence.members))
                    self._listed.set()
                elif presence.event == "join":
                    self._apply(self._mesh.member_joined(presence.member))
                else:
                    self._apply(self._mesh.member_left(presence.member))
            elif command is Command.OFFER:
                self._apply(self._mesh.offer_received(source, request.body))
            elif command is Command.ANSWER:
                self._apply(self._mesh.answer_received(source, request.body))
            elif command is Command.CANDIDATE:
                self._apply(self._mesh.candidate_received(source, request.body))
            else:
                log.warning("ignoring unexpected %s from %r", command.name, source[:64])
        except ProtocolError as exc:
            log.warning("ignoring a bad %s from %r: %s", command.name, source[:64], exc)

    # -- the mesh's actions --------------------------------------------------

    def _apply(self, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case MakeOffer(member, number):
                    self._start_link(member, number, None, offering=True)
                case AcceptOffer(member, number, offer):
                    self._start_link(member, number, offer, offering=False)
                case ApplyAnswer(_, number, answer):
                    self._to_link(number, "answer", answer)
                case AddCandidate(_, number, candidate):
                    self._to_link(number, "candidate", candidate)
                case CloseLink(_, number):
                    link = self._links.pop(number, None)
                    if link is not None and link.task is not None:
                        link.task.cancel()  # its finally closes the connection
                case Notify(member, notice):
                    event: RoomEvent
                    if notice is Notice.JOINED:
                        event = MemberJoined(member)
                    elif notice is Notice.CONNECTED:
                        event = MemberConnected(member)
                    else:
                        event = MemberLeft(member)
                    self._events.put_nowait(event)
        self._changed.set()

    def _to_link(self, number: int, kind: str, body: bytes | None) -> None:
        link = self._links.get(number)
        if link is not None:
            link.inbox.put_nowait((kind, body))

    def _open_link(self, member: str) -> _Link | None:
        number = self._mesh.current_link(member)
        return None if number is None else self._links.get(number)

    def _start_link(self, member: str, number: int, offer: bytes | None, offering: bool) -> None:
        pc = RTCPeerConnection(self.config.ice.rtc_configuration())
        link = self._links[number] = _Link(member, number, pc)
        link.task = self._spawn(self._run_link(link, offer, offering), f"room-link-{number}")

    async def _run_link(self, link: _Link, offer: bytes | None, offering: bool) -> None:
        """Set the connection up, then read its channel until it ends; report
        how it ended to the mesh (not when the mesh closed it: cancelled)."""
        outcome = "failed"
        try:
            async with asyncio.TaskGroup() as tasks:
                # the member's answer and candidates, applied as they come
                inbox = tasks.create_task(self._read_inbox(link))
                channel = await self._connect(link, offer, offering)
                self._apply(self._mesh.link_open(link.member, link.number))
                log.info("connected to %r in room %r", link.member, self.name)
                outcome = await self._read_channel(link, channel)
                inbox.cancel()
        except* (PeerError, ProtocolError) as group:
            log.warning("connection to %r failed: %s", link.member, group.exceptions[0])
        except* Exception as group:  # aiortc refusing an SDP, for one
            log.warning("connection to %r failed: %r", link.member, group.exceptions[0])
        finally:
            await link.pc.close()
        if self._links.get(link.number) is link:
            del self._links[link.number]
            if outcome == "closed":
                self._apply(self._mesh.link_closed(link.member, link.number))
            else:
                self._apply(self._mesh.link_failed(link.member, link.number))

    async def _connect(self, link: _Link, offer: bytes | None, offering: bool) -> Channel:
        pc, timeout = link.pc, self.config.connect_timeout
        try:
            async with asyncio.timeout(timeout):
                if offering:
                    channel = link.channel = Channel(pc.createDataChannel(CHAT_LABEL))
                    await pc.setLocalDescription(await pc.createOffer())
                    await self._signaling.send_offer(
                        self.peer_id, link.member, _description_body(pc)
                    )
                else:
                    channels: asyncio.Queue[Channel] = asyncio.Queue()
                    pc.on("datachannel", lambda dc: channels.put_nowait(Channel(dc)))
                    await link.negotiation.set_remote(
                        decode_description(offer, Command.OFFER, "offer")
                    )
                    await pc.setLocalDescription(await pc.createAnswer())
                    await self._signaling.send_answer(
                        self.peer_id, link.member, _description_body(pc)
                    )
                    channel = await channels.get()
                    if channel.label != CHAT_LABEL:
                        log.info("channel %r from %r: read as chat", channel.label, link.member)
                    link.channel = channel
                await channel.opened.wait()
        except TimeoutError:
            raise ConnectTimeout(
                f"connection to {link.member!r} did not open within {timeout:g} s "
                f"({link.negotiation.state()})"
            ) from None
        return channel

    async def _read_inbox(self, link: _Link) -> None:
        while True:
            kind, body = await link.inbox.get()
            if kind == "answer":
                if not link.negotiation.remote_set:
                    await link.negotiation.set_remote(
                        decode_description(body, Command.ANSWER, "answer")
                    )
            else:
                await link.negotiation.add_candidate(body)

    async def _read_channel(self, link: _Link, channel: Channel) -> str:
        """Queue the member's messages until the channel closes ("closed") or
        the connection fails ("failed")."""
        failed = asyncio.ensure_future(link.failed.wait())
        receive: asyncio.Future[str | bytes] | None = None
        try:
            while True:
                receive = asyncio.ensure_future(channel.receive())
                await asyncio.wait({receive, failed}, return_when=asyncio.FIRST_COMPLETED)
                if not receive.done():
                    return "failed"
                try:
                    message = receive.result()
                except ChannelClosed:
                    return "failed" if link.failed.is_set() else "closed"
                text = message if isinstance(message, str) else message.decode("utf-8", "replace")
                while self._events.qsize() >= MAX_QUEUED_EVENTS:
                    self._room_for_events.clear()
                    await self._room_for_events.wait()
                self._events.put_nowait(RoomMessage(link.member, text))
        finally:
            failed.cancel()
            if receive is not None and not receive.done():
                receive.cancel()


@contextlib.asynccontextmanager
async def join(
    server: PeerConfig | str, room: str, peer_id: str | None = None
) -> AsyncIterator[Room]:
    """Join ``room`` as ``peer_id`` (default: a random short ID) through the
    signaling server ``server`` (a ws:// URL or a PeerConfig); yield the
    :class:`Room`. Raises IdTaken (ID in use in that room), RoomFull,
    Refused (bad name, token), SignalingError (server unreachable)."""
    config = server if isinstance(server, PeerConfig) else PeerConfig(signal_url=server)
    peer_id = new_member_id() if peer_id is None else peer_id
    check_room_name(room)
    check_member_id(peer_id)
    with restrict_host_addresses(config.ice.host_addresses):
        signaling = await SignalingClient.connect(
            config.signal_url,
            ROOM_PATH,
            config.connect_timeout,
            token=config.token,
            cafile=config.cafile,
        )
        the_room = Room(config, room, peer_id, signaling)
        graceful = False
        try:
            await the_room._join()
            yield the_room
            graceful = True
        finally:
            try:
                await the_room._leave(graceful)
            finally:
                await signaling.close()
