"""WHEP (draft-ietf-wish-whep): any WHEP player watches any registered peer.

``POST /whep/<peer-id>`` with an SDP offer (``Content-Type:
application/sdp``) becomes an ordinary Offer (command 3) to that answer
peer, from a virtual offer peer that lives in the router like any other
(so the router's rules, IDs and tokens apply unchanged); the peer's Answer
comes back as ``201 Created`` with the answer SDP and a ``Location`` for
``DELETE`` (and ``PATCH`` for trickled candidates). Nothing changes on the
wire: the answer peer cannot tell a WHEP player from an offer peer.

The pure parts (paths, validation, SDP surgery, responses) are functions;
:class:`WhepGateway` is the asyncio glue the server calls.
"""

from __future__ import annotations

import asyncio
import http
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from rtc_signal.proto import tokens
from rtc_signal.proto.commands import Command
from rtc_signal.proto.errors import ProtocolError
from rtc_signal.proto.wire import CANDIDATE_PREFIX, description_json, request_frame
from rtc_signal.signaling import plainhttp
from rtc_signal.signaling.actions import LOCAL, Action, Claim
from rtc_signal.signaling.connection import BodyTooLarge, FastPathConnection
from rtc_signal.signaling.logtext import clip
from rtc_signal.signaling.router import Forward, Path, Router, Send

log = logging.getLogger(__name__)

PREFIX = "/whep/"
SDP = "application/sdp"
SDPFRAG = "application/trickle-ice-sdpfrag"
#: every WHEP response allows these (players run in pages of other origins)
CORS_METHODS = "POST, PATCH, DELETE, OPTIONS"
CORS_HEADERS = "Authorization, Content-Type, If-Match"
#: sessions alive at once; more get 503 (each holds a router entry)
MAX_SESSIONS = 1024
#: sessions alive at once with one answer peer; more get 429: each costs the
#: peer a peer connection (sockets, a DTLS context), and a player that keeps
#: POSTing must not exhaust its files (300 POSTs took one from 16 to 216)
MAX_SESSIONS_PER_PEER = 16


@dataclass
class WhepSession:
    """One WHEP player: a virtual offer peer in the router."""

    resource: str
    peer_id: str
    source: str
    conn: int
    answer: asyncio.Future[str] = field(repr=False)
    candidates: list[str] = field(default_factory=list)
    candidate_arrived: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    expiry: asyncio.TimerHandle | None = field(default=None, repr=False)


# -- pure helpers ----------------------------------------------------------------


def parse_path(path: str) -> tuple[str, str | None] | None:
    """``/whep/<peer>`` -> (peer, None); ``/whep/<peer>/<resource>`` -> (peer,
    resource); anything else None. Percent-escapes are decoded."""
    if not path.startswith(PREFIX):
        return None
    parts = path[len(PREFIX) :].split("/")
    if len(parts) == 1 and parts[0]:
        return unquote(parts[0]), None
    if len(parts) == 2 and parts[0] and parts[1]:
        return unquote(parts[0]), parts[1]
    return None


def check_offer(body: bytes) -> str:
    """The offer SDP of a POST body; ValueError with a reason if it is not one."""
    if not body:
        raise ValueError("the body must be an SDP offer (it is empty)")
    try:
        sdp = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("the SDP offer is not UTF-8") from None
    if not sdp.startswith("v=0"):
        raise ValueError("the body is not an SDP offer (it must start with v=0)")
    if "\nm=" not in sdp:
        raise ValueError("the SDP offer has no media section (m=)")
    return sdp


def has_candidates(sdp: str) -> bool:
    return "\na=candidate:" in sdp


def splice_candidates(sdp: str, lines: list[str]) -> str:
    """Put trickled ``candidate:`` lines into the answer's first media section
    (the bundle's transport), followed by end-of-candidates."""
    newline = "\r\n" if "\r\n" in sdp else "\n"
    rows = sdp.split(newline)
    if rows and rows[-1] == "":
        rows.pop()
    media = [i for i, row in enumerate(rows) if row.startswith("m=")]
    if not media:
        return sdp
    end = media[1] if len(media) > 1 else len(rows)
    added = [f"a={line}" for line in lines] + ["a=end-of-candidates"]
    return newline.join(rows[:end] + added + rows[end:]) + newline


def candidate_lines(sdpfrag: str) -> list[str]:
    """The ``candidate:`` lines of a trickle-ice-sdpfrag (RFC 8840)."""
    lines = []
    for raw in sdpfrag.splitlines():
        row = raw.strip()
        if row.startswith("a=" + CANDIDATE_PREFIX):
            lines.append(row[2:])
    return lines


def respond(
    status: http.HTTPStatus,
    body: bytes | str = b"",
    content_type: str = "text/plain; charset=utf-8",
    headers: list[tuple[str, str]] | None = None,
    origin: str | None = None,
) -> Response:
    """A complete HTTP response (the connection closes after it)."""
    if isinstance(body, str):
        body = body.encode()
    fields = Headers(headers or [])
    fields["Access-Control-Allow-Origin"] = origin or "*"
    fields["Access-Control-Expose-Headers"] = "Location, Link"
    if body:
        fields["Content-Type"] = content_type
    fields["Cache-Control"] = "no-store"
    return plainhttp.response(status, fields, body)


def error(
    status: http.HTTPStatus, why: str, origin: str | None = None, logged: str | None = None
) -> Response:
    """An error response with a one-line reason (``logged``: the reason for
    the log, if ``why`` has unclipped values)."""
    log.info("WHEP: %d %s", status.value, why if logged is None else logged)
    return respond(status, f"rtc-signal WHEP: {why}\n", origin=origin)


# -- the gateway -----------------------------------------------------------------


class WhepGateway:
    """Turns WHEP requests into offers of virtual offer peers, and back."""

    def __init__(
        self,
        router: Router,
        new_conn_id: Callable[[], int],
        write: Callable[[int, bytes | str], bool],
        *,
        secret: bytes | None,
        allow_origins: tuple[str, ...],
        answer_timeout: float = 8.0,
        gather_wait: float = 1.0,
        session_ttl: float = 3600.0,
    ) -> None:
        self.router = router
        self._new_conn_id = new_conn_id
        #: write a frame to a real connection; False if it is gone
        self._write = write
        self.secret = secret
        self.allow_origins = allow_origins
        self.answer_timeout = answer_timeout
        self.gather_wait = gather_wait
        self.session_ttl = session_ttl
        self.sessions: dict[str, WhepSession] = {}  # by resource
        self._by_conn: dict[int, WhepSession] = {}

    # -- frames the router forwards to a WHEP session --------------------------

    def deliver(self, conn: int, frame: bytes | str) -> bool:
        """A frame forwarded to virtual connection ``conn``; False if none."""
        session = self._by_conn.get(conn)
        if session is None:
            return False
        # pydantic's decoders on first use, not when the server starts
        from rtc_signal.proto.bodies import decode_description
        from rtc_signal.proto.envelope import decode

        try:
            envelope = decode(frame)
        except ProtocolError as exc:  # the router forwards only valid frames
            log.warning("WHEP %s: unreadable frame: %s", clip(session.source), clip(exc))
            return True
        if envelope.command is Command.ANSWER and not session.answer.done():
            try:
                description = decode_description(envelope.request.body, Command.ANSWER, "answer")
                session.answer.set_result(description.sdp)
            except ProtocolError as exc:
                session.answer.set_exception(ValueError(f"the peer's answer is unreadable: {exc}"))
        elif envelope.command is Command.CANDIDATE and envelope.request.body:
            line = envelope.request.body.decode("utf-8", "replace").strip()
            if line.startswith(CANDIDATE_PREFIX) and len(session.candidates) < 64:
                session.candidates.append(line)
                session.candidate_arrived.set()
        return True

    def _send(self, session: WhepSession, frame: bytes) -> tuple[int, str] | None:
        """Route a frame from the session's virtual peer; (code, why) if refused."""
        return self._perform(session, self.router.receive(session.conn, frame))

    def _perform(self, session: WhepSession, actions: list[Action]) -> tuple[int, str] | None:
        for action in actions:
            if isinstance(action, Claim):
                # In a cluster: the server made this ID up for a player of a
                # peer of this node; it needs no claim across the cluster.
                return self._perform(session, self.router.claimed(action, LOCAL))
            if isinstance(action, Forward):
                if not self._write(action.target, action.frame):
                    for failure in self.router.forward_failed(action):
                        if isinstance(failure, Send):
                            return _refusal(failure) or (404, "the peer is gone")
            elif isinstance(action, Send) and action.conn == session.conn:
                refusal = _refusal(action)
                if refusal is not None:
                    return refusal
        return None

    # -- HTTP ----------------------------------------------------------------

    async def handle(self, connection: FastPathConnection, request: Request) -> Response:
        """Answer one HTTP request whose path starts with /whep/."""
        origin = request.headers.get("Origin")
        if self.allow_origins and origin is not None and origin not in self.allow_origins:
            return error(http.HTTPStatus.FORBIDDEN, f"origin {clip(origin)} not allowed")
        # a body that cannot be delimited (411, 400): nothing of it was read
        splitter = connection.splitter
        if splitter is not None and splitter.refusal is not None:
            return error(*splitter.refusal, origin)
        parsed = parse_path(urlsplit(request.path).path)
        if parsed is None:
            return error(http.HTTPStatus.NOT_FOUND, "use /whep/<peer-id>", origin)
        peer_id, resource = parsed
        method = request.method
        if method == "OPTIONS":
            headers = [
                ("Access-Control-Allow-Methods", CORS_METHODS),
                ("Access-Control-Allow-Headers", CORS_HEADERS),
                ("Accept-Post", SDP),
            ]
            return respond(http.HTTPStatus.NO_CONTENT, headers=headers, origin=origin)
        try:
            body = await connection.request_body(self.answer_timeout)
        except BodyTooLarge as exc:
            return error(http.HTTPStatus.REQUEST_ENTITY_TOO_LARGE, str(exc), origin)
        except TimeoutError:
            return error(http.HTTPStatus.REQUEST_TIMEOUT, "the request body did not arrive", origin)
        if resource is None:
            if method != "POST":
                return self._not_allowed(method, "POST, OPTIONS", origin)
            return await self._post(request, peer_id, body, origin)
        session = self.sessions.get(resource)
        if session is None or session.peer_id != peer_id:
            return error(http.HTTPStatus.NOT_FOUND, "no such WHEP session (ended?)", origin)
        if method == "DELETE":
            self.end(session)
            return respond(http.HTTPStatus.OK, origin=origin)
        if method == "PATCH":
            return self._patch(session, request, body, origin)
        return self._not_allowed(method, "PATCH, DELETE, OPTIONS", origin)

    @staticmethod
    def _not_allowed(method: str, allowed: str, origin: str | None) -> Response:
        response = error(
            http.HTTPStatus.METHOD_NOT_ALLOWED, f"{clip(method)} is not allowed here", origin
        )
        response.headers["Allow"] = allowed
        return response

    async def _post(
        self, request: Request, peer_id: str, body: bytes, origin: str | None
    ) -> Response:
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != SDP:
            given = clip(content_type) if content_type else "missing"
            return error(
                http.HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                f"Content-Type must be {SDP}, not {given}",
                origin,
            )
        try:
            offer = check_offer(body)
        except ValueError as exc:
            return error(http.HTTPStatus.BAD_REQUEST, str(exc), origin)
        allowed_id: str | None = None
        if self.secret is not None:
            token = tokens.token_from_request(request.path, request.headers.get("Authorization"))
            if token is None:
                return error(
                    http.HTTPStatus.UNAUTHORIZED,
                    "a token is required (Authorization: Bearer TOKEN)",
                    origin,
                )
            try:
                allowed_id, room = tokens.verify(self.secret, token, time.time())
            except tokens.TokenError as exc:
                return error(
                    http.HTTPStatus.UNAUTHORIZED,
                    f"invalid token: {exc}",
                    origin,
                    logged=f"invalid token: {clip(exc)}",
                )
            if room is not None:
                return error(
                    http.HTTPStatus.FORBIDDEN, "a room token is only valid on /room", origin
                )
        if peer_id not in self.router.answer_peers():
            return error(
                http.HTTPStatus.NOT_FOUND,
                f"no answer peer is registered as {clip(peer_id)}",
                origin,
            )
        if len(self.sessions) >= MAX_SESSIONS:
            return error(http.HTTPStatus.SERVICE_UNAVAILABLE, "too many WHEP sessions", origin)
        with_peer = sum(session.peer_id == peer_id for session in self.sessions.values())
        if with_peer >= MAX_SESSIONS_PER_PEER:
            busy = error(
                http.HTTPStatus.TOO_MANY_REQUESTS,
                f"{MAX_SESSIONS_PER_PEER} WHEP sessions with this peer are open; "
                "end one (DELETE) or try again later",
                origin,
            )
            busy.headers["Retry-After"] = "5"
            return busy
        session = self._open(peer_id, allowed_id)
        refused = self._send(
            session,
            request_frame(Command.OFFER, session.source, peer_id, description_json("offer", offer)),
        )
        if refused is not None:
            self.end(session)
            return error(_http_status(refused[0]), refused[1], origin, logged=clip(refused[1]))
        try:
            answer = await asyncio.wait_for(asyncio.shield(session.answer), self.answer_timeout)
        except TimeoutError:
            self.end(session)
            return error(
                http.HTTPStatus.GATEWAY_TIMEOUT,
                f"peer {clip(peer_id)} did not answer within {self.answer_timeout:g} s",
                origin,
            )
        except ValueError as exc:  # (the peer's answer is unreadable)
            self.end(session)
            return error(http.HTTPStatus.BAD_GATEWAY, str(exc), origin, logged=clip(exc))
        if not has_candidates(answer):
            answer = splice_candidates(answer, await self._gathered(session))
        log.info("WHEP %s: watching %s", clip(session.source), clip(peer_id))
        location = f"{PREFIX}{request.path[len(PREFIX) :].split('?')[0]}/{session.resource}"
        return respond(
            http.HTTPStatus.CREATED,
            answer,
            content_type=SDP,
            headers=[("Location", location), ("ETag", f'"{session.resource}"')],
            origin=origin,
        )

    async def _gathered(self, session: WhepSession) -> list[str]:
        """Candidates the peer trickles after its answer: until a short quiet
        spell, as a WHEP answer must carry them (bounded by gather_wait)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.gather_wait
        quiet = min(0.2, self.gather_wait)
        while True:
            session.candidate_arrived.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            wait = quiet if session.candidates else remaining
            try:
                await asyncio.wait_for(session.candidate_arrived.wait(), min(wait, remaining))
            except TimeoutError:
                if session.candidates:
                    break
        return list(session.candidates)

    def _patch(
        self, session: WhepSession, request: Request, body: bytes, origin: str | None
    ) -> Response:
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != SDPFRAG:
            return error(
                http.HTTPStatus.UNSUPPORTED_MEDIA_TYPE, f"Content-Type must be {SDPFRAG}", origin
            )
        fragment = body.decode("utf-8", "replace")
        lines = candidate_lines(fragment)
        if not lines and "a=end-of-candidates" not in fragment:
            return error(http.HTTPStatus.BAD_REQUEST, "no candidate in the SDP fragment", origin)
        for line in lines:
            refused = self._send(
                session,
                request_frame(Command.CANDIDATE, session.source, session.peer_id, line.encode()),
            )
            if refused is not None:
                return error(_http_status(refused[0]), refused[1], origin, logged=clip(refused[1]))
        return respond(http.HTTPStatus.NO_CONTENT, origin=origin)

    # -- sessions ------------------------------------------------------------

    def _open(self, peer_id: str, allowed_id: str | None) -> WhepSession:
        loop = asyncio.get_running_loop()
        resource = secrets.token_urlsafe(16)  # the capability to DELETE/PATCH it
        source = allowed_id or f"whep-{secrets.token_hex(6)}"
        conn = self._new_conn_id()
        session = WhepSession(resource, peer_id, source, conn, loop.create_future())
        self.router.connect(conn, Path.OFFER, None, allowed_id)
        self.sessions[resource] = session
        self._by_conn[conn] = session
        # a player that never sends DELETE must not hold its entry forever
        session.expiry = loop.call_later(self.session_ttl, self.end, session)
        return session

    def end(self, session: WhepSession) -> None:
        """Forget a session (DELETE, failure or expiry)."""
        if self.sessions.pop(session.resource, None) is None:
            return
        self._by_conn.pop(session.conn, None)
        if session.expiry is not None:
            session.expiry.cancel()
        if not session.answer.done():
            session.answer.cancel()
        self.router.disconnect(session.conn, hold=False)
        log.info("WHEP %s: ended", clip(session.source))

    def close(self) -> None:
        for session in list(self.sessions.values()):
            self.end(session)


def _refusal(action: Send) -> tuple[int, str] | None:
    """(code, message) of an error Response the router sent a session; None for ok."""
    from rtc_signal.proto.envelope import decode

    try:
        response = decode(action.frame).response
    except ProtocolError:
        return None
    return None if response.code == 0 else (response.code, response.msg)


def _http_status(code: int) -> http.HTTPStatus:
    """The HTTP status for a router code (they are HTTP's, where one fits)."""
    try:
        status = http.HTTPStatus(code)
    except ValueError:
        return http.HTTPStatus.BAD_GATEWAY
    return status if 400 <= code < 500 else http.HTTPStatus.BAD_GATEWAY
