"""Offer and answer peers: RTCPeerConnection set-up driven by signaling.

- :func:`call` (offer side) connects to ``/offer``, sends our offer to a
  target and yields a :class:`Call` once the data channel ``data`` is open.
- :class:`AnswerPeer` registers on ``/register`` and serves successive (and
  concurrent) callers, a fresh RTCPeerConnection per offer.

Our descriptions carry complete candidates (aiortc gathers inside
``setLocalDescription``); candidates trickled by other stacks (command 4,
a bare ``candidate:`` line) are applied, and those arriving before the remote
description are held and applied right after it (the Go demo drops them).

With a one-time code (``call(..., code=)``, ``AnswerPeer(..., code=)``), a
SPAKE2 exchange runs first and both descriptions carry a MAC over their
DTLS fingerprints (:mod:`peers.pake`); named calls are unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp

from rtc_signal.peers.channel import Channel
from rtc_signal.peers.codes import Code
from rtc_signal.peers.defaults import DEFAULT_SIGNAL_URL
from rtc_signal.peers.errors import (
    ConnectTimeout,
    HandshakeRefused,
    PeerError,
    Refused,
    SignalingError,
)
from rtc_signal.peers.fingerprints import short_auth_string
from rtc_signal.peers.fixes import apply as apply_fixes
from rtc_signal.peers.ice import (
    IceSettings,
    no_candidate_problem,
    restrict_host_addresses,
    selected_pair,
)
from rtc_signal.peers.pake import ABORT_BODY, CodeAuth, CodeMismatch, CodeNotFound, is_pake_body
from rtc_signal.peers.reconnect import Backoff, ReconnectPolicy, new_resume_key, register_path
from rtc_signal.peers.signaling_client import SignalingClient
from rtc_signal.peers.tuning import apply as apply_tuning
from rtc_signal.peers.tuning import prepare_spare, warm_up
from rtc_signal.proto import (
    CANDIDATE_PREFIX,
    Command,
    ProtocolError,
    SessionDescription,
    decode_candidate,
    decode_description,
)

log = logging.getLogger(__name__)
apply_tuning()  # aiortc/aioice speed-ups: peers/tuning.py (RTC_PEER_NO_TUNING=1: off)
apply_fixes()  # aiortc bug workarounds: peers/fixes.py

DATA_CHANNEL_LABEL = "data"


@dataclass(frozen=True)
class PeerConfig:
    """Where to signal, how to do ICE, and how long to wait for a connection."""

    signal_url: str = DEFAULT_SIGNAL_URL
    ice: IceSettings = field(default_factory=IceSettings)
    connect_timeout: float = 30.0
    #: the signaling server's token for our ID (``rtc-signal token``), if it wants one
    token: str | None = None
    #: CA bundle verifying a ``wss://`` signaling server (default: the system's)
    cafile: str | None = None


def new_offer_id() -> str:
    """A random offer-peer ID, so concurrent callers never collide."""
    return f"offer-{secrets.token_hex(4)}"


@dataclass
class Call:
    """One established peer-to-peer connection and its data channel."""

    channel: Channel
    pc: RTCPeerConnection
    local_id: str
    remote_id: str
    #: seconds from sending the offer (offer side) or receiving it (answer
    #: side) to the data channel being open
    setup_seconds: float = 0.0
    #: whether both DTLS fingerprints were authenticated with a one-time code
    authenticated: bool = False

    def short_auth_string(self) -> str:
        """The SAS of this call (:func:`peers.fingerprints.short_auth_string`):
        the same words on both sides unless someone is in the middle."""
        local, remote = self.pc.localDescription, self.pc.remoteDescription
        if local.type == "offer":
            return short_auth_string(local.sdp, remote.sdp)
        return short_auth_string(remote.sdp, local.sdp)


class _EarlyCandidates:
    """Candidates from callers whose offer has not arrived yet.

    A browser or Go peer trickles right after its offer; relayed by other
    servers, or racing a caller that calls again, a candidate can come first.
    Bounded: at most MAX_CALLERS callers (the oldest is forgotten) and
    MAX_EACH candidates each, so a flood of them costs little memory.
    """

    MAX_CALLERS = 64
    MAX_EACH = 64

    def __init__(self) -> None:
        self._by_caller: dict[str, list[bytes | None]] = {}

    def add(self, caller: str, body: bytes | None) -> None:
        bodies = self._by_caller.get(caller)
        if bodies is None:
            if len(self._by_caller) >= self.MAX_CALLERS:
                del self._by_caller[next(iter(self._by_caller))]
            bodies = self._by_caller[caller] = []
        if len(bodies) < self.MAX_EACH:
            bodies.append(body)

    def take(self, caller: str) -> list[bytes | None]:
        return self._by_caller.pop(caller, [])


class _Negotiation:
    """The remote side of one RTCPeerConnection: description and candidates."""

    def __init__(self, pc: RTCPeerConnection, remote_id: str, auth: CodeAuth | None = None) -> None:
        self.pc = pc
        self.remote_id = remote_id
        self._early_candidates: list[bytes | None] = []
        self.remote_set = False
        #: code mode: the exchange that authenticates this call
        self.auth = auth
        #: code mode: fails with CodeMismatch when the peer aborts
        self.aborted: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def abort(self, error: CodeMismatch) -> None:
        if not self.aborted.done():
            self.aborted.set_exception(error)

    def forget_abort(self) -> None:
        """The call is over: an abort nobody waited for is not an error to log."""
        if self.aborted.done():
            self.aborted.exception()
        else:
            self.aborted.cancel()

    async def set_remote(self, description: SessionDescription) -> None:
        await self.pc.setRemoteDescription(
            RTCSessionDescription(sdp=description.sdp, type=description.type)
        )
        self.remote_set = True
        early, self._early_candidates = self._early_candidates, []
        for body in early:
            await self.add_candidate(body)

    async def add_candidate(self, body: bytes | None) -> None:
        """Apply a trickled candidate (or end-of-candidates for an empty body)."""
        if not self.remote_set:
            self._early_candidates.append(body)
            return
        try:
            line = decode_candidate(body)
            if line is None:
                await self.pc.addIceCandidate(None)
                return
            candidate = candidate_from_sdp(line[len(CANDIDATE_PREFIX) :])
        except (ProtocolError, ValueError, AssertionError, IndexError) as exc:
            log.warning("ignoring a bad candidate from %r: %s", self.remote_id, exc)
            return
        # The Go peers and browsers send the bare line: mid 0 / index 0 implied.
        candidate.sdpMid = "0"
        candidate.sdpMLineIndex = 0
        try:
            await self.pc.addIceCandidate(candidate)
        except Exception as exc:  # e.g. the connection closed meanwhile
            log.warning("could not add a candidate from %r: %r", self.remote_id, exc)
            return
        log.debug("added remote candidate %s", line)

    def queue_early(self, bodies: list[bytes | None]) -> None:
        """Candidates that came before the offer: applied once it is set."""
        self._early_candidates[:0] = bodies

    def state(self) -> str:
        return (
            f"signaling {self.pc.signalingState}, ICE {self.pc.iceConnectionState}, "
            f"connection {self.pc.connectionState}"
        )


async def _wait_open(
    channel: Channel,
    negotiation: _Negotiation,
    timeout: float,
    watch: asyncio.Future[None] | None = None,
    configured: float | None = None,
) -> None:
    """Wait for the channel to open; ConnectTimeout (with the ICE state) if it
    does not in time, or the error of ``watch`` if that task ends first.
    ``configured`` is the user's timeout, for the message."""
    opened = asyncio.ensure_future(channel.opened.wait())
    waiters: set[asyncio.Future[Any]] = {opened}
    if watch is not None:
        waiters.add(watch)
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        opened.cancel()
    if channel.opened.is_set():
        return
    if watch is not None and watch.done():
        watch.result()  # raises what ended it
        raise SignalingError("signaling ended before the data channel opened")
    raise ConnectTimeout(
        f"data channel to {negotiation.remote_id!r} did not open within "
        f"{configured or timeout:g} s "
        f"({negotiation.state()})"
    )


def _check_candidates(pc: RTCPeerConnection, ice: IceSettings) -> None:
    """PeerError now if our description offers no ICE candidate: the call
    could only wait out its timeout (see ice.no_candidate_problem)."""
    problem = no_candidate_problem(pc.localDescription.sdp, ice)
    if problem is not None:
        raise PeerError(problem)


def _description_body(pc: RTCPeerConnection, auth: CodeAuth | None = None) -> bytes:
    """Our local description as an Offer/Answer body; with a code's ``auth``,
    sealed with the MAC over our fingerprints."""
    description = _local_description(pc)
    return description.to_json() if auth is None else auth.seal(description)


@contextlib.asynccontextmanager
async def call(
    config: PeerConfig,
    target: str,
    peer_id: str | None = None,
    label: str = DATA_CHANNEL_LABEL,
    prepare: Callable[[RTCPeerConnection], None] | None = None,
    protocol: str = "",
    code: Code | None = None,
) -> AsyncIterator[Call]:
    """Call the answer peer ``target``; yield the Call once the channel is open.

    ``label`` names the data channel: the answer side picks what to run on it
    by its label (``data`` for the demo's workloads). ``prepare`` is called
    with the new RTCPeerConnection before the offer is made (media viewers
    add their receive transceivers there). ``protocol`` is the channel's
    subprotocol (chat and pipe announce their end-of-stream handshake with it).

    With a one-time ``code``, ``target`` is ignored: the call goes to the
    code's owner, and both DTLS fingerprints are authenticated with the code
    (:mod:`peers.pake`) before anything is applied; CodeMismatch if that fails.
    """
    if code is not None:
        target = code.peer_id
    peer_id = peer_id or new_offer_id()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + config.connect_timeout
    with restrict_host_addresses(config.ice.host_addresses):
        # the process's first DTLS context costs ~5-7 ms once, and the call's
        # certificate ~1 ms: pay them while the signaling connection is being
        # set up (peers/tuning.py, spare_certificate and dtls_warmup)
        loop.call_soon(prepare_spare)
        loop.call_soon(warm_up)
        signaling = await SignalingClient.connect(
            config.signal_url,
            "/offer",
            config.connect_timeout,
            token=config.token,
            cafile=config.cafile,
        )
        pc: RTCPeerConnection | None = None
        pump: asyncio.Task[None] | None = None
        try:
            auth = None
            if code is not None:
                auth = CodeAuth(code, "offer", peer_id, target)
                await _exchange_code(signaling, auth, peer_id, target, deadline - loop.time())
            pc = RTCPeerConnection(config.ice.rtc_configuration())
            if prepare is not None:
                prepare(pc)
            channel = Channel(pc.createDataChannel(label, protocol=protocol))
            await pc.setLocalDescription(await pc.createOffer())
            _check_candidates(pc, config.ice)
            offered = time.perf_counter()  # (uvloop's loop.time() has 1 ms steps)
            body = _description_body(pc, auth)
            await signaling.send_offer(peer_id, target, body)
            log.info("offer sent to %r as %r", target, peer_id)
            warm_up()  # (if not done yet) while the answer is on its way
            negotiation = _Negotiation(pc, target, auth)
            pump = asyncio.create_task(
                _offer_side_pump(signaling, negotiation, peer_id, channel),
                name="offer-signaling",
            )
            remaining = max(0.0, deadline - loop.time())
            await _wait_open(channel, negotiation, remaining, pump, config.connect_timeout)
            log.info("data channel open with %r via %s", target, selected_pair(pc))
            setup = time.perf_counter() - offered
            yield Call(channel, pc, peer_id, target, setup, auth is not None)
        finally:
            if pump is not None:
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError, PeerError):
                    await pump
            if pc is not None:
                await pc.close()
            await signaling.close()


async def _exchange_code(
    signaling: SignalingClient, auth: CodeAuth, peer_id: str, target: str, timeout: float
) -> None:
    """Offer side: send our SPAKE2 message and take the code owner's."""
    try:
        await signaling.send_candidate(peer_id, target, auth.message())
    except Refused as exc:
        if exc.code in (1, 404):
            raise CodeNotFound(auth.code.number) from None
        raise
    try:
        async with asyncio.timeout(max(0.0, timeout)):
            async for envelope in signaling.requests():
                request = envelope.request
                if request.source != target or request.target != peer_id:
                    log.warning("ignoring %s from %r", envelope.command.name, request.source[:64])
                    continue
                await signaling.acknowledge(envelope.command)
                if envelope.command is Command.CANDIDATE and is_pake_body(request.body):
                    assert request.body is not None
                    auth.receive(request.body)  # CodeMismatch if the owner refused us
                    log.info("code exchange with %r done", target)
                    return
                log.warning("ignoring %s before the code exchange", envelope.command.name)
    except TimeoutError:
        raise ConnectTimeout(f"the code's owner {target!r} did not answer in time") from None


def _local_description(pc: RTCPeerConnection) -> SessionDescription:
    local = pc.localDescription
    return SessionDescription(type=local.type, sdp=local.sdp)


async def _offer_side_pump(
    signaling: SignalingClient, negotiation: _Negotiation, peer_id: str, channel: Channel
) -> None:
    """Apply the answer and trickled candidates as the server forwards them."""
    try:
        async for envelope in signaling.requests():
            request = envelope.request
            if request.target != peer_id:
                log.warning("ignoring %s addressed to %r", envelope.command.name, request.target)
                continue
            if request.source != negotiation.remote_id:
                # Only the peer we called may answer or send candidates. The
                # server refuses others too; this holds against one that does not.
                log.warning(
                    "ignoring %s from %r: we called %r",
                    envelope.command.name,
                    request.source[:64],
                    negotiation.remote_id,
                )
                continue
            await signaling.acknowledge(envelope.command)
            auth = negotiation.auth
            if envelope.command is Command.ANSWER and not negotiation.remote_set:
                description = decode_description(request.body, Command.ANSWER, "answer")
                if auth is not None:
                    await _open_or_abort(
                        signaling, auth, request.body, description, peer_id, request.source
                    )
                await negotiation.set_remote(description)
                log.info("answer from %r applied", request.source)
            elif envelope.command is Command.CANDIDATE and is_pake_body(request.body):
                if auth is not None and request.body == ABORT_BODY:
                    auth.receive(request.body)  # raises CodeMismatch
            elif envelope.command is Command.CANDIDATE:
                await negotiation.add_candidate(request.body)
            else:
                log.warning("ignoring unexpected %s from %r", envelope.command.name, request.source)
    except (PeerError, ProtocolError) as exc:
        if not channel.opened.is_set():
            raise  # fatal before the channel opened: _wait_open reports it
        log.info("signaling ended after the call was set up: %s", exc)
    except Exception as exc:  # aiortc refusing the answer SDP, for one
        if not channel.opened.is_set():
            raise PeerError(f"negotiation with {negotiation.remote_id!r} failed: {exc!r}") from exc
        log.warning("signaling error after the call was set up: %r", exc)


async def _open_or_abort(
    signaling: SignalingClient,
    auth: CodeAuth,
    body: bytes | None,
    description: SessionDescription,
    peer_id: str,
    remote_id: str,
) -> None:
    """Check the peer's fingerprint MAC; if it is wrong, tell the peer (so it
    gives up too, not waiting for its timeout) and raise CodeMismatch."""
    try:
        auth.open(body, description)
    except CodeMismatch:
        log.warning("fingerprint MAC from %r does not match", remote_id)
        with contextlib.suppress(PeerError):
            await signaling.send_candidate(peer_id, remote_id, auth.fail())
        raise


CallHandler = Callable[[Call], Awaitable[None]]


class MediaHook(Protocol):
    """What an answer peer that sends media (peers.media.MediaServer) does
    for each caller, beside the data-channel workloads."""

    def attach(self, pc: RTCPeerConnection, offer: SessionDescription, caller: str) -> None:
        """Add send tracks for the offer's media lines (before it is applied)."""

    async def serve_without_channel(
        self, pc: RTCPeerConnection, caller: str, timeout: float
    ) -> None:
        """Keep a call whose offer has no data channel until it ends."""


DEFAULT_RECONNECT = ReconnectPolicy()
#: what AnswerPeer.serve follows: a call ended (with its error, if any), or
#: the signaling connection was lost for good
_Event = tuple[Literal["call-ended", "signaling-lost"], BaseException | None]


class AnswerPeer:
    """An answer peer: registers ``peer_id`` and serves every caller.

    With a ``reconnect`` policy (the default), a lost signaling connection is
    re-established with backoff (see :mod:`peers.reconnect`) and the ID
    registered again, with a resume key the server holds the ID for; calls
    in progress are peer to peer and go on meanwhile. ``on_status`` gets a
    human-readable line for each step of a reconnect.
    """

    def __init__(
        self,
        config: PeerConfig,
        peer_id: str,
        on_registered: Callable[[str], None] | None = None,
        reconnect: ReconnectPolicy | None = DEFAULT_RECONNECT,
        on_status: Callable[[str], None] | None = None,
        media: MediaHook | None = None,
        code: Code | None = None,
    ) -> None:
        if code is not None and peer_id != code.peer_id:
            raise ValueError(f"a code's owner registers as {code.peer_id!r}, not {peer_id!r}")
        self.config = config
        self.peer_id = peer_id
        #: one-time code mode: only a caller that proves it knows the code is
        #: answered, and only one caller may try (see :meth:`_on_code_message`)
        self.code = code
        self._code_tried = False
        self.on_registered = on_registered
        self.media = media
        self.reconnect = reconnect
        self.on_status = on_status
        #: sent with every registration so the server holds our ID across a
        #: drop for us only (none without reconnect: nobody would come back)
        self.resume_key = new_resume_key() if reconnect is not None else None
        #: successful registrations so far (the first, then one per reconnect)
        self.registrations = 0
        self._calls: dict[str, tuple[_Negotiation, asyncio.Task[None]]] = {}
        self._registered = asyncio.Event()
        self._started = 0

    async def wait_registered(self, timeout: float) -> None:
        await asyncio.wait_for(self._registered.wait(), timeout)

    async def serve(self, handler: CallHandler, max_calls: int | None = None) -> None:
        """Serve callers until cancelled (or until ``max_calls`` calls have ended).

        With ``max_calls``, a failed call raises its error; without it, failed
        calls are logged and serving goes on. The first registration's
        failure is raised at once. If the signaling connection is lost for
        good (no reconnect policy, or the ID or a registration was refused
        on reconnecting), calls in progress (peer to peer, they don't need
        it) are finished and then the SignalingError is raised.
        """
        with restrict_host_addresses(self.config.ice.host_addresses):
            self._started = 0
            signaling = await self._register()
            events: asyncio.Queue[_Event] = asyncio.Queue()
            failure: BaseException | None = None
            async with asyncio.TaskGroup() as tasks:
                link = tasks.create_task(
                    self._stay_registered(signaling, handler, tasks, events, max_calls)
                )
                failure = await self._until_done(events, max_calls)
                link.cancel()
                for _, task in self._calls.values():
                    task.cancel()
            if failure is not None:
                raise failure

    async def _register(self) -> SignalingClient:
        """Connect to /register and register our ID; the open client."""
        signaling = await SignalingClient.connect(
            self.config.signal_url,
            register_path(self.resume_key),
            self.config.connect_timeout,
            token=self.config.token,
            cafile=self.config.cafile,
        )
        try:
            await signaling.register(self.peer_id)
        except BaseException:
            await signaling.close()
            raise
        self.registrations += 1
        # the URL without the query: the resume key is not for logs
        url = signaling.url.split("?", 1)[0]
        log.info("registered as %r on %s", self.peer_id, url)
        self._registered.set()
        if self.on_registered is not None:
            self.on_registered(url)
        # idle until the first caller: its certificate now (peers/tuning.py)
        prepare_spare()
        warm_up()
        return signaling

    def _status(self, line: str) -> None:
        log.info("%s", line)
        if self.on_status is not None:
            self.on_status(line)

    async def _stay_registered(
        self,
        signaling: SignalingClient,
        handler: CallHandler,
        tasks: asyncio.TaskGroup,
        events: asyncio.Queue[_Event],
        max_calls: int | None,
    ) -> None:
        """Listen on ``signaling``; when it is lost, reconnect (if we do)."""
        while True:
            async with signaling:
                lost = await self._listen(signaling, handler, tasks, events, max_calls)
            self._registered.clear()
            if self.reconnect is None:
                events.put_nowait(("signaling-lost", lost))
                return
            self._status(f"lost the signaling server ({lost}); calls in progress go on")
            try:
                signaling = await self._reconnect(self.reconnect)
            except SignalingError as exc:
                events.put_nowait(("signaling-lost", exc))
                return

    async def _reconnect(self, policy: ReconnectPolicy) -> SignalingClient:
        """Retry registering with backoff until it works; raise Refused (a
        registration refused, e.g. the ID taken once our hold ran out)."""
        backoff = Backoff(policy)
        while True:
            delay = backoff.next_delay()
            self._status(f"reconnecting in {delay:.2f} s (attempt {backoff.attempt})")
            await asyncio.sleep(delay)
            try:
                return await self._register()
            except Refused:
                raise
            except HandshakeRefused as exc:
                if exc.status in (401, 403):  # our token or origin: retrying cannot help
                    self._status(f"not reconnecting: {exc}")
                    raise
                self._status(f"reconnect attempt {backoff.attempt} failed: {exc}")
            except SignalingError as exc:
                self._status(f"reconnect attempt {backoff.attempt} failed: {exc}")

    async def _until_done(
        self, events: asyncio.Queue[_Event], max_calls: int | None
    ) -> BaseException | None:
        """Follow calls ending and signaling loss; return the error to raise."""
        ended = 0
        signaling_lost: BaseException | None = None
        while max_calls is None or ended < max_calls:
            kind, error = await events.get()
            if kind == "call-ended":
                ended += 1
                if error is not None and max_calls is not None:
                    return error
            else:
                signaling_lost = error
            if signaling_lost is not None and not self._calls:
                return signaling_lost
        return None

    async def _listen(
        self,
        signaling: SignalingClient,
        handler: CallHandler,
        tasks: asyncio.TaskGroup,
        events: asyncio.Queue[_Event],
        max_calls: int | None,
    ) -> SignalingError:
        """Start a call per offer, route candidates to calls, until signaling
        ends; return the error that ended it. Calls are in ``tasks``, not
        tied to this connection: they outlive it."""
        early = _EarlyCandidates()
        code_auths: dict[str, CodeAuth] = {}
        try:
            async for envelope in signaling.requests():
                request = envelope.request
                caller = request.source
                await signaling.acknowledge(envelope.command)
                if envelope.command is Command.OFFER:
                    if max_calls is not None and self._started >= max_calls:
                        log.info(
                            "not taking a call from %r: already served %d", caller, self._started
                        )
                        continue
                    try:
                        description = decode_description(request.body, Command.OFFER, "offer")
                    except ProtocolError as exc:
                        log.warning("bad offer from %r: %s", caller, exc)
                        continue
                    auth = None
                    if self.code is not None:
                        auth = code_auths.get(caller)
                        if auth is None or not auth.keyed:
                            log.warning("ignoring an offer from %r: no code exchange", caller)
                            continue
                    previous = self._calls.pop(caller, None)
                    if previous is not None:
                        previous[1].cancel()  # a caller that calls again starts afresh
                    pc = RTCPeerConnection(self.config.ice.rtc_configuration())
                    negotiation = _Negotiation(pc, caller, auth)
                    negotiation.queue_early(early.take(caller))
                    self._started += 1
                    task = tasks.create_task(
                        self._serve_call(
                            signaling, negotiation, description, handler, events, request.body
                        ),
                        name=f"call-from-{caller}",
                    )
                    self._calls[caller] = (negotiation, task)
                elif envelope.command is Command.CANDIDATE and is_pake_body(request.body):
                    assert request.body is not None
                    await self._on_code_message(signaling, caller, request.body, code_auths, events)
                elif envelope.command is Command.CANDIDATE:
                    entry = self._calls.get(caller)
                    if entry is None:
                        log.debug("candidate from %r before its offer: kept", caller)
                        early.add(caller, request.body)
                    else:
                        await entry[0].add_candidate(request.body)
                else:
                    log.warning("ignoring unexpected %s from %r", envelope.command.name, caller)
        except SignalingError as exc:
            return exc
        raise AssertionError("requests() ends only with SignalingError")  # pragma: no cover

    async def _on_code_message(
        self,
        signaling: SignalingClient,
        caller: str,
        body: bytes,
        code_auths: dict[str, CodeAuth],
        events: asyncio.Queue[_Event],
    ) -> None:
        """A code-exchange Candidate from ``caller``: its SPAKE2 message (the
        code's one attempt; later callers are refused), or its abort."""
        if self.code is None:
            log.info("ignoring a code-exchange message from %r: we have no code", caller)
            return
        auth = code_auths.get(caller)
        if body == ABORT_BODY:
            entry = self._calls.get(caller)
            if entry is not None:
                entry[0].abort(CodeMismatch("the caller refused our proof of the code"))
            elif auth is not None and not auth.failed:
                auth.fail()  # before its offer: the attempt is over
                events.put_nowait(("call-ended", CodeMismatch("the caller gave up")))
            return
        if self._code_tried:
            log.warning("refusing a code exchange from %r: the code was used", caller)
            with contextlib.suppress(PeerError):
                await signaling.send_candidate(self.peer_id, caller, ABORT_BODY)
            return
        self._code_tried = True  # the one attempt, whatever happens next
        auth = CodeAuth(self.code, "answer", caller, self.peer_id)
        code_auths[caller] = auth
        try:
            auth.receive(body)
        except PeerError as exc:
            with contextlib.suppress(PeerError):
                await signaling.send_candidate(self.peer_id, caller, auth.fail())
            events.put_nowait(("call-ended", exc))
            return
        try:
            await signaling.send_candidate(self.peer_id, caller, auth.message())
        except PeerError as exc:
            events.put_nowait(("call-ended", exc))
            return
        log.info("code exchange with %r done, waiting for its offer", caller)

    async def _run_handlers(
        self,
        handler: CallHandler,
        first: Channel,
        later: asyncio.Queue[Channel],
        negotiation: _Negotiation,
        setup: float,
    ) -> None:
        """Run ``handler`` on the call's first channel, and on each channel the
        caller opens later on the same connection (a browser opens ``control``
        beside ``data``); the call ends when the first channel's handler does."""
        pc, caller = negotiation.pc, negotiation.remote_id

        async def extra(channel: Channel) -> None:
            try:
                await _wait_open(channel, negotiation, self.config.connect_timeout)
                await handler(Call(channel, pc, self.peer_id, caller, 0.0))
            except Exception as exc:  # an extra channel never ends the call
                log.warning("channel %r from %r failed: %r", channel.label, caller, exc)

        async def watch() -> None:
            async with asyncio.TaskGroup() as extras:
                while True:
                    channel = await later.get()
                    log.info("channel %r opened by %r", channel.label, caller)
                    extras.create_task(extra(channel))

        watcher = asyncio.ensure_future(watch())
        try:
            authenticated = negotiation.auth is not None
            await handler(Call(first, pc, self.peer_id, caller, setup, authenticated))
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _serve_call(
        self,
        signaling: SignalingClient,
        negotiation: _Negotiation,
        offer: SessionDescription,
        handler: CallHandler,
        events: asyncio.Queue[_Event],
        offer_body: bytes | None = None,
    ) -> None:
        pc, caller, auth = negotiation.pc, negotiation.remote_id, negotiation.auth
        error: BaseException | None = None
        try:
            if auth is not None:
                await _open_or_abort(signaling, auth, offer_body, offer, self.peer_id, caller)
            channels: asyncio.Queue[Channel] = asyncio.Queue()
            pc.on("datachannel", lambda dc: channels.put_nowait(Channel(dc)))
            if self.media is not None:
                self.media.attach(pc, offer, caller)
            await negotiation.set_remote(offer)
            await pc.setLocalDescription(await pc.createAnswer())
            _check_candidates(pc, self.config.ice)
            body = _description_body(pc, auth)
            await signaling.send_answer(self.peer_id, caller, body)
            log.info("answered %r", caller)
            if self.media is not None and "m=application" not in offer.sdp:
                # media only (WHEP players, browsers' recvonly offers)
                await self.media.serve_without_channel(pc, caller, self.config.connect_timeout)
                return
            offered = asyncio.get_running_loop().time()
            deadline = offered + self.config.connect_timeout
            channel = await _first_channel(channels, negotiation, self.config.connect_timeout)
            remaining = max(0.0, deadline - asyncio.get_running_loop().time())
            await _wait_open(
                channel, negotiation, remaining, negotiation.aborted, self.config.connect_timeout
            )
            log.info("data channel open with %r via %s", caller, selected_pair(pc))
            setup = asyncio.get_running_loop().time() - offered
            # set up: the next caller's certificate now, not when it calls
            asyncio.get_running_loop().call_soon(prepare_spare)
            await self._run_handlers(handler, channel, channels, negotiation, setup)
        except (PeerError, ProtocolError) as exc:
            log.warning("call from %r failed: %s", caller, exc)
            error = exc
        except Exception as exc:
            # One caller's bad SDP (aiortc raises ValueError & co) or a failing
            # handler must not bring down the peer serving everybody else.
            log.warning(
                "call from %r failed: %r", caller, exc, exc_info=log.isEnabledFor(logging.DEBUG)
            )
            error = PeerError(f"call from {caller!r} failed: {exc!r}")
        finally:
            if self._calls.get(caller, (None, None))[1] is asyncio.current_task():
                del self._calls[caller]
            negotiation.forget_abort()
            await pc.close()
            events.put_nowait(("call-ended", error))


async def _first_channel(
    channels: asyncio.Queue[Channel], negotiation: _Negotiation, timeout: float
) -> Channel:
    """The caller's first data channel; ConnectTimeout if none comes in time,
    CodeMismatch if the caller aborts the code exchange meanwhile."""
    arrival = asyncio.ensure_future(channels.get())
    waiters: set[asyncio.Future[Any]] = {arrival, negotiation.aborted}
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not arrival.done():
            arrival.cancel()
    if arrival.done() and not arrival.cancelled():
        return arrival.result()
    if negotiation.aborted.done():
        negotiation.aborted.result()  # raises the abort
    raise ConnectTimeout(
        f"no data channel from {negotiation.remote_id!r} within {timeout:g} s "
        f"({negotiation.state()})"
    )
