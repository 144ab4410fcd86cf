"""The signaling server: the asyncio layer around :class:`signaling.router.Router`.

It only moves data: it accepts WebSocket connections on ``/register``,
``/offer`` and ``/room`` (rooms: :mod:`signaling.room_rules`), feeds each
message to the router and performs the actions the router returns. It owns
what the router must not know about: sockets, the frame size limit enforced
by websockets, keepalive pings, flow control and shutdown. The connections
are :class:`signaling.connection.FastPathConnection`, which hand it data
messages straight from ``data_received``; what they write
while it handles one read goes out with one ``write`` per connection
(:meth:`SignalingServer.flush`), and one keepalive task pings them all, instead
of a task each (``benchmarks/README.md`` has the measurements).

The connection limit counts from TCP accept (:mod:`signaling.gate`, in the
connection's ``connection_made``: the oldest slow request is dropped, or HTTP
503). Admission (:meth:`SignalingServer._admit`, during the opening
handshake): the Origin allowlist (403) and, with a secret, the token (401;
:mod:`proto.tokens`), whose ID the router then enforces. After it, each
message passes the connection's rate limit (:mod:`signaling.limits`; 429,
then close 1008), and a connection that has not registered (or sent its
first offer) within the idle timeout is closed with 1008. TLS is the
``ssl`` context of the listening socket.

With ``redis_url`` the server is a node of a cluster (:mod:`signaling.cluster`):
the router gets a :class:`~signaling.registry.ClusterRegistry` and returns
:class:`~signaling.actions.Claim` and :class:`~signaling.actions.RemoteForward`
actions, which :meth:`SignalingServer._cluster_action` hands to the cluster;
without it nothing on the relay's path changes.

Flow control is the one of ``await ws.send()``: a forward whose target's write
buffer is over its high-water mark holds the sender's acknowledgement and its
next messages until the target drains; messages that keep arriving meanwhile
are queued, and reading pauses once more than ``max_queue`` are waiting.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import http
import itertools
import logging
import os
import signal
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers, MultipleValuesError
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.protocol import State

from rtc_signal.proto import tokens
from rtc_signal.signaling import health, metrics, plainhttp
from rtc_signal.signaling.actions import Claim, RemoteForward, RoomClaim, RoomLeft, RoomOutcome
from rtc_signal.signaling.connection import FastPathConnection
from rtc_signal.signaling.counters import (
    HANDSHAKE_REFUSED,
    IDLE_TIMEOUT,
    RATE_LIMIT_CLOSE,
    LatencyHistogram,
    ServerCounters,
)
from rtc_signal.signaling.gate import AcceptGate
from rtc_signal.signaling.limits import ALLOW, DEFAULT_MAX_FRAME, REFUSE, RateLimit, TokenBucket
from rtc_signal.signaling.logtext import clip
from rtc_signal.signaling.pages import Pages
from rtc_signal.signaling.registry import ClusterRegistry
from rtc_signal.signaling.rooms import DEFAULT_MAX_ROOM_SIZE
from rtc_signal.signaling.router import (
    NOT_FOUND,
    TOO_MANY_REQUESTS,
    Action,
    ConnId,
    Forward,
    Held,
    Path,
    Router,
    Send,
)
from rtc_signal.signaling.router import Frame as Message
from rtc_signal.signaling.server_handover import HandoverMixin
from rtc_signal.signaling.siblings import SiblingLinks
from rtc_signal.signaling.whep import PREFIX as WHEP_PREFIX
from rtc_signal.signaling.whep import WhepGateway

log = logging.getLogger(__name__)

#: Frames up to ``max_frame`` get a 413 reply and the connection lives on;
#: websockets refuses to buffer frames beyond this multiple of it (close 1009).
HARD_LIMIT_FACTOR = 4

#: Messages queued for a sender blocked by a full target before reading pauses
#: (websockets' ``max_queue``, which :meth:`FastPathConnection.hold` honours).
MAX_QUEUE = 4

#: The keepalive task pings this many peers at a time, its batches spread
#: over the ping interval.
PING_BATCH = 64

#: Messages routed in one turn of the event loop before the rest wait for a
#: later turn (about 3 ms of relaying on a 2-vCPU VM). Without a bound, a
#: saturated server spent each turn on every frame every busy client had
#: sent, ~150 ms at 100 pairs: everything that waits for the loop between two
#: steps (a handshake, a Redis reply, a /healthz request) waited that long per
#: step, and a new call's set-up took about 1 s (benchmarks/cluster.py, 2c).
SLICE_MESSAGES = 128
#: The most messages a waiting connection has routed per round, round robin.
#: As many as a busy client's read carries (the output of a turn is written
#: once per connection: smaller turns meant more, smaller writes; 4 cost 17 %
#: of the relay's throughput).
TURN_MESSAGES = 32

_OPEN = State.OPEN
_monotonic = time.monotonic

#: The query parameter of /register with an answer peer's resume key, and
#: the longest key accepted (peers.reconnect makes 22-character ones).
RESUME_PARAM = "resume"
MAX_RESUME_KEY = 64


def resume_key(request_path: str) -> str | None:
    """The resume key in a request path's query, if any; ValueError if malformed."""
    query = urlsplit(request_path).query
    if not query:
        return None
    values = parse_qs(query, keep_blank_values=True).get(RESUME_PARAM)
    if values is None:
        return None
    if len(values) != 1 or not 0 < len(values[0]) <= MAX_RESUME_KEY:
        raise ValueError(f"{RESUME_PARAM} must be given once, 1 to {MAX_RESUME_KEY} characters")
    return values[0]


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 18080
    max_frame: int = DEFAULT_MAX_FRAME
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    #: serve the web page and JavaScript client on plain HTTP GET requests
    serve_pages: bool = True
    #: accept WHEP players at /whep/<peer-id> (see signaling.whep)
    whep: bool = True
    #: how long a WHEP POST waits for the peer's answer (below websockets'
    #: 10 s opening-handshake timeout, which bounds every HTTP request)
    whep_timeout: float = 8.0
    #: how long a closing handshake may take at shutdown before the TCP
    #: connection is dropped; keeps SIGTERM-to-exit under 2 s
    close_timeout: float = 1.0
    #: how long a dropped answer peer's ID is held for it to reconnect with
    #: its resume key (0: not at all)
    resume_grace: float = 30.0
    # -- security (README "Security model") --------------------------------
    #: the token secret (:func:`proto.tokens.check_secret`); None: open server
    secret: bytes | None = None
    #: allowed ``Origin`` header values; empty: any (no Origin is always allowed)
    allow_origins: tuple[str, ...] = ()
    #: open TCP connections, counted from accept (signaling/gate.py): at it the
    #: oldest one still sending its request is dropped, or a new one gets 503;
    #: None: no limit
    max_connections: int | None = None
    #: open TCP connections from one source address, counted the same way;
    #: over it a new one gets 503 at once. None: no per-address limit (behind
    #: a reverse proxy every connection has the proxy's address)
    max_connections_per_ip: int | None = None
    #: seconds from TCP accept to the end of the WebSocket handshake
    handshake_timeout: float = 10.0
    #: per-connection message rate limit; None: none
    rate_limit: RateLimit | None = None
    #: seconds a connection may stay without registering (or, on /offer,
    #: without sending its first offer) before it is closed; None: forever
    idle_timeout: float | None = None
    #: members a room may have at once (more get 503)
    max_room_size: int = DEFAULT_MAX_ROOM_SIZE
    #: PEM certificate chain and key: serve wss:// (TLS)
    certfile: str | None = None
    keyfile: str | None = None
    # -- observability (README "Metrics and health") --------------------------
    #: serve GET /metrics (Prometheus text format)
    metrics: bool = True
    #: the bearer token /metrics requires; None: /metrics is open
    metrics_token: str | None = None
    # -- cluster (README "Running a cluster") ---------------------------------
    #: the cluster's Redis (redis://HOST:PORT/DB); None: one process, in memory
    redis_url: str | None = None
    #: this node's name in the cluster (None: a random one)
    node_id: str | None = None
    #: seconds between heartbeats, and how long a silent node's IDs stay its own
    cluster_heartbeat: float = 1.0
    cluster_ttl: float = 5.0
    #: bind with SO_REUSEPORT (``--workers``: several processes on one port)
    reuse_port: bool = False
    #: ``--workers``: the links to the sibling workers, (node ID, socket fd)
    #: each, over which /offer connections move to the worker their call is on
    sibling_links: tuple[tuple[str, int], ...] = ()


#: seconds between two ticks of the router's call table: a call without
#: signaling ends after IDLE_TICKS of them (10 minutes)
CALL_TICK = 60.0
#: reply credits a connection may bank (frames forwarded to it, not yet answered)
MAX_CREDITS = 256
#: the inbox budget of a connection, in rate limits (see SignalingServer)
INBOX_SHARES = 4
_INBOX_FULL = "the target is receiving more than the rate limit allows; message dropped"


class SignalingServer(HandoverMixin):
    """A running signaling server. Use as ``async with SignalingServer(cfg) as s``.

    It is its connections' :class:`signaling.connection.ConnectionOwner`:
    they call :meth:`receive`, :meth:`flush` and :meth:`drained`.
    """

    def __init__(self, config: ServerConfig = ServerConfig()) -> None:
        self.config = config
        self.cluster: Cluster | None = None
        registry = None
        if config.redis_url is not None:
            from rtc_signal.signaling.cluster import Cluster

            node = config.node_id or os.urandom(6).hex()
            self.cluster = Cluster(
                config.redis_url, node, config.cluster_heartbeat, config.cluster_ttl
            )
            registry = ClusterRegistry(node)
        self.router = Router(
            max_frame=config.max_frame, max_room_size=config.max_room_size, registry=registry
        )
        self._flush_soon: asyncio.Handle | None = None
        self._connections: dict[ConnId, FastPathConnection] = {}
        self._ids = itertools.count(1)
        self._server: Server | None = None
        self._conn_class: type[FastPathConnection] | None = None
        #: connections with buffered output, to flush
        self._dirty: list[FastPathConnection] = []
        self._keepalive_task: asyncio.Task[None] | None = None
        self._call_tick: asyncio.TimerHandle | None = None
        #: pending releases of held IDs (see Router.disconnect)
        self._releases: dict[str, asyncio.TimerHandle] = {}
        #: every accepted TCP connection, for --max-connections (signaling/gate.py)
        self._gate: AcceptGate[FastPathConnection] = AcceptGate(
            config.max_connections, config.max_connections_per_ip
        )
        self.pages = Pages() if config.serve_pages else None
        # -- /metrics, /healthz, /readyz (signaling.metrics, signaling.health) --
        self.counters = ServerCounters()
        self.forward_latency = LatencyHistogram()
        #: when the frames of this read came in (0: no frame yet), and how
        #: many of them were forwarded: observed at flush (two clock reads and
        #: one bisect per read, not per frame)
        self._read_at = 0.0
        self._read_forwards = 0
        # -- turns of the event loop (see SLICE_MESSAGES) ----------------------
        #: the two bounds, per server (tests make them small)
        self.slice_messages = SLICE_MESSAGES
        self.turn_messages = TURN_MESSAGES
        #: messages this turn may still route; at 0, arriving messages wait in
        #: their connection's backlog and the connection in ``_waiting``
        self.budget = SLICE_MESSAGES
        #: connections whose messages wait for a later turn, round robin
        self._waiting: collections.deque[FastPathConnection] = collections.deque()
        #: the same for connections that sent one message (a new client's
        #: request, a probe): served first, within half of each turn, so that
        #: they do not wait a whole round of the busy ones
        self._light: collections.deque[FastPathConnection] = collections.deque()
        #: the next turn's start (a call_soon) is scheduled
        self._turn_scheduled = False
        #: set when the server starts closing: /readyz answers 503
        self.draining = False
        #: why the server would not take a new client, each (None: it would);
        #: /readyz runs them all, and a cluster appends its Redis check
        self.readiness_checks: list[health.ReadinessCheck] = [
            lambda: "draining" if self.draining else None,
            lambda: "at the connection limit" if self._gate.full() else None,
        ]
        if self.cluster is not None:
            cluster = self.cluster
            self.readiness_checks.append(lambda: None if cluster.ready else "Redis unreachable")
        self.metrics = (
            metrics.MetricsEndpoint(
                metrics.SignalingCollector(
                    self.router,
                    self.counters,
                    self.forward_latency,
                    self._gate,
                    lambda: not health.not_ready(self.readiness_checks),
                    None if self.cluster is None else self._cluster_counts,
                ),
                config.metrics_token,
            )
            if config.metrics
            else None
        )
        #: what all senders together may forward to one connection: several
        #: callers' worth (a fan-in of INBOX_SHARES at the full rate), so that
        #: honest callers get through while a flooding crowd is refused at the
        #: flooders, not charged to the target
        limit = config.rate_limit
        self._inbox_limit = (
            limit
            if limit is None
            else RateLimit(limit.rate * INBOX_SHARES, limit.burst * INBOX_SHARES)
        )
        self.whep = (
            WhepGateway(
                self.router,
                lambda: next(self._ids),
                self._write_to,
                secret=config.secret,
                allow_origins=config.allow_origins,
                answer_timeout=config.whep_timeout,
            )
            if config.whep
            else None
        )

    @property
    def port(self) -> int:
        """The bound port (useful with ``port=0``)."""
        assert self._server is not None, "server not started"
        sockname = next(iter(self._server.sockets)).getsockname()
        return int(sockname[1])

    @property
    def url(self) -> str:
        host = self.config.host
        if ":" in host:
            host = f"[{host}]"
        scheme = "wss" if self.config.certfile else "ws"
        return f"{scheme}://{host}:{self.port}"

    async def start(self) -> None:
        cfg = self.config
        if self.cluster is not None:  # (before listening: no Redis, no server)
            cluster = self.cluster
            cluster.on_frame = self._deliver_remote
            cluster.on_moved = self.router.moved
            cluster.live_ids = self.router.local_ids
            cluster.on_presence = self._room_presence
            cluster.live_members = self.router.local_members
            await cluster.start()
            if cfg.sibling_links and cfg.certfile is None:  # (TLS state cannot move)
                self.siblings = SiblingLinks(dict(cfg.sibling_links), self._adopt)
        self._server = await serve(
            self._handle,
            cfg.host,
            cfg.port,
            create_connection=self._connection_class(),
            # from TCP accept to the end of the handshake (limits count from accept)
            open_timeout=cfg.handshake_timeout,
            process_request=self._process_request,
            process_response=self._count_response,
            ssl=self._ssl_context(),
            # Signaling frames are small and mostly base64: compression costs
            # CPU and ~100 KiB per connection for zlib state.
            compression=None,
            reuse_port=cfg.reuse_port or None,
            **self._connection_settings(),
        )
        if self.siblings is not None:
            self.siblings.start()
        if cfg.ping_interval is not None:
            self._keepalive_task = asyncio.create_task(
                self._keepalive(cfg.ping_interval, cfg.ping_timeout)
            )
        self._schedule_call_tick()
        # The full decoder (pydantic, ~0.25 s to import on a slow machine) is
        # needed at the first response a peer sends (the ack of the first
        # forwarded offer): imported then, it held up that call's answer and
        # every client by as long. Import it now, before anyone is connected,
        # once this start has returned (startup stays as fast).
        asyncio.get_running_loop().call_soon(_import_full_decoder)
        log.info("listening on %s", self.url)
        self._log_security()
        if self.pages is not None:
            log.info("web page at %s/", self.url.replace("ws", "http", 1))
        if self.metrics is not None:
            log.info(
                "metrics at %s%s (%s)",
                self.url.replace("ws", "http", 1),
                metrics.PATH,
                "bearer token required" if self.metrics.protected else "open",
            )

    async def close(self) -> None:
        """Close every connection with 1001 (going away) and stop listening."""
        if self._server is None:
            return
        self.draining = True
        if self._keepalive_task is not None:
            self._keepalive_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keepalive_task
            self._keepalive_task = None
        if self._call_tick is not None:
            self._call_tick.cancel()
            self._call_tick = None
        if self.whep is not None:
            self.whep.close()
        if self.siblings is not None:
            self.siblings.close()
        server = self._server
        server.close(close_connections=True)
        # websockets' close() waits, without a deadline, for a full write
        # buffer to drain before its closing handshake: a client that neither
        # reads nor closes would hold the shutdown forever. Past the close
        # timeout, drop the TCP connections that are left.
        try:
            async with asyncio.timeout(self.config.close_timeout + 0.5):
                await asyncio.shield(server.wait_closed())
        except TimeoutError:
            stuck = list(server.all_connections)
            log.warning("dropping %d connections that did not close in time", len(stuck))
            for ws in stuck:
                ws.transport.abort()
            await server.wait_closed()
        for handle in self._releases.values():
            handle.cancel()
        self._releases.clear()
        if self.cluster is not None:
            await self.cluster.close()

    def _connection_class(self) -> type[FastPathConnection]:
        """FastPathConnection with this server's gate set before the connection
        is made, so that it counts from TCP accept (one class per server)."""
        if self._conn_class is not None:
            return self._conn_class
        gate = self._gate
        server_counters = self.counters

        class GatedConnection(FastPathConnection):
            __slots__ = ()
            counters = server_counters

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                self.gate = gate  # (asyncio makes the connection after this)

        self._conn_class = GatedConnection
        return GatedConnection

    def _connection_settings(self) -> dict[str, Any]:
        """What every connection gets: from :func:`serve`, and for the ones
        adopted from a sibling worker (signaling/server_handover.py)."""
        cfg = self.config
        return {
            "max_size": cfg.max_frame * HARD_LIMIT_FACTOR,
            # One task pings every connection (see _keepalive), rather than
            # websockets' task per connection.
            "ping_interval": None,
            "close_timeout": cfg.close_timeout,
            "max_queue": MAX_QUEUE,
        }

    def _schedule_call_tick(self) -> None:
        def tick() -> None:
            self._release_freed()
            ended = self.router.tick()
            if ended:
                log.debug("%d calls without signaling for a while ended", ended)
            self._schedule_call_tick()

        self._call_tick = asyncio.get_running_loop().call_later(CALL_TICK, tick)

    async def serve_forever(self) -> None:
        assert self._server is not None, "server not started"
        await self._server.serve_forever()

    async def __aenter__(self) -> SignalingServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- connections --------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext | None:
        cfg = self.config
        if cfg.certfile is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cfg.certfile, cfg.keyfile)
        return context

    def _log_security(self) -> None:
        cfg = self.config
        if cfg.secret is None:
            log.warning(
                "running open (no authentication): any client may register or call "
                "under any ID; start with --secret (or RTC_SIGNAL_SECRET) to require tokens"
            )
        else:
            log.info("token authentication on: peers must present a token for their ID")
        limit = cfg.rate_limit
        log.info(
            "limits: origins %s, max connections %s (per IP %s), rate %s, idle timeout %s, TLS %s",
            ", ".join(cfg.allow_origins) or "any",
            cfg.max_connections or "none",
            cfg.max_connections_per_ip or "none",
            f"{limit.rate:g}/s (burst {limit.burst:g})" if limit else "none",
            f"{cfg.idle_timeout:g} s" if cfg.idle_timeout else "none",
            "on" if cfg.certfile else "off",
        )

    def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | Awaitable[Response] | None:
        assert isinstance(connection, FastPathConnection)
        self._gate.admit(connection)  # its request is here: not a slow client
        if _failed_early(connection):
            return self._drop(connection, None)
        response = self._check_path(connection, request) or self._admit(connection, request)
        if isinstance(response, Awaitable):
            return self._drop_if_failed(connection, response)
        return response

    async def _drop_if_failed(
        self, connection: ServerConnection, pending: Awaitable[Response]
    ) -> Response:
        response = await pending
        return await self._drop(connection, response) if _failed_early(connection) else response

    async def _drop(self, connection: ServerConnection, response: Response | None) -> Response:
        """Close a connection that websockets failed before its HTTP response
        (see :func:`_failed_early`); the response returned is not sent."""
        log.info(
            "dropping a request from %s: it was followed by data that is not a WebSocket frame",
            connection.remote_address,
        )
        connection.transport.abort()
        await connection.wait_closed()  # (CLOSED: websockets sends nothing more)
        return response or connection.respond(http.HTTPStatus.BAD_REQUEST, "")

    def _admit(self, connection: ServerConnection, request: Request) -> Response | None:
        """A WebSocket handshake's admission checks: None to accept, else the refusal."""
        cfg = self.config
        assert isinstance(connection, FastPathConnection)
        try:
            origin = request.headers.get("Origin")
            authorization = request.headers.get("Authorization")
        except MultipleValuesError as exc:
            return _refusal(connection, http.HTTPStatus.BAD_REQUEST, f"repeated header {exc}")
        # No Origin header: not a browser (which always sends one), so the
        # allowlist, a defence against other sites' pages, does not apply.
        if cfg.allow_origins and origin is not None and origin not in cfg.allow_origins:
            return _refusal(
                connection, http.HTTPStatus.FORBIDDEN, f"origin {clip(origin)} not allowed"
            )
        if cfg.secret is not None:
            token = tokens.token_from_request(request.path, authorization)
            logged = None
            if token is None:
                why = "a token is required (Authorization: Bearer TOKEN, or ?token=TOKEN)"
            else:
                try:
                    grant = tokens.verify(cfg.secret, token, time.time())
                    connection.allowed_id, connection.allowed_room = grant
                    why = ""
                except tokens.TokenError as exc:
                    why = f"invalid token: {exc}"
                    logged = f"invalid token: {clip(exc)}"
            if why:
                response = _refusal(connection, http.HTTPStatus.UNAUTHORIZED, why, logged)
                response.headers["WWW-Authenticate"] = 'Bearer realm="rtc-signal"'
                return response
        return None

    def _check_path(
        self, connection: ServerConnection, request: Request
    ) -> Response | Awaitable[Response] | None:
        assert isinstance(connection, FastPathConnection)
        path = urlsplit(request.path).path
        if self.whep is not None and path.startswith(WHEP_PREFIX):
            # (it refuses what the splitter refused itself, with its CORS headers)
            return self.whep.handle(connection, request)
        if connection.splitter is not None and connection.splitter.refusal is not None:
            return _refusal(connection, *connection.splitter.refusal)
        if path in health.PATHS or (self.metrics is not None and path == metrics.PATH):
            return self._observe(connection, request, path)
        if path in (Path.REGISTER.value, Path.OFFER.value, Path.ROOM.value):
            try:
                resume_key(request.path)
            except ValueError as exc:
                return connection.respond(http.HTTPStatus.BAD_REQUEST, f"rtc-signal: {exc}\n")
            return None
        if self.pages is not None and not _is_upgrade(request):
            if request.method not in ("GET", "HEAD"):
                response = connection.respond(
                    http.HTTPStatus.METHOD_NOT_ALLOWED, "rtc-signal: pages are read with GET\n"
                )
                response.headers["Allow"] = "GET, HEAD"
                return response
            page = self.pages.respond(path, request.headers.get("If-None-Match"))
            return plainhttp.response(
                page.status, Headers(page.headers), page.body, head=request.method == "HEAD"
            )
        return connection.respond(
            http.HTTPStatus.NOT_FOUND, "rtc-signal: connect to /register, /offer or /room\n"
        )

    def _cluster_counts(self) -> tuple[int, int, int]:
        """(bus messages sent, received, failed Redis calls), for /metrics."""
        assert self.cluster is not None
        stats = self.cluster.stats
        return stats.messages_out, stats.messages_in, stats.redis_errors

    def _observe(self, connection: ServerConnection, request: Request, path: str) -> Response:
        """``/metrics``, ``/healthz`` or ``/readyz``."""
        if request.method not in ("GET", "HEAD"):
            response = connection.respond(
                http.HTTPStatus.METHOD_NOT_ALLOWED, f"rtc-signal: {path} is read with GET\n"
            )
            response.headers["Allow"] = "GET, HEAD"
            return response
        if path == metrics.PATH:
            assert self.metrics is not None
            answer: metrics.MetricsResponse | health.ProbeResponse = self.metrics.respond(
                request.headers.get_all("Authorization")
            )
        else:
            answer = health.respond(path, self.readiness_checks)
        return plainhttp.response(
            answer.status, Headers(answer.headers), answer.body, head=request.method == "HEAD"
        )

    def _count_response(
        self, connection: ServerConnection, request: Request, response: Response
    ) -> None:
        """Count every response to an HTTP request (pages, WHEP, handshakes)."""
        status = response.status_code
        self.counters.respond(status)
        if status != http.HTTPStatus.SWITCHING_PROTOCOLS and _is_upgrade(request):
            self.counters.refuse(HANDSHAKE_REFUSED)

    async def _handle(self, ws: ServerConnection, initial: bytes = b"") -> None:
        """websockets' handler: serve ``ws`` until it closes (``initial``: the
        bytes a sibling worker read from it before handing it over)."""
        # (the handler only runs once the handshake succeeded: both are set)
        assert isinstance(ws, FastPathConnection)
        assert ws.request is not None and ws.response is not None
        conn = next(self._ids)
        path = Path(urlsplit(ws.request.path).path)
        resume = resume_key(ws.request.path) if path is Path.REGISTER else None
        # Nothing reads the handshake's headers any more: free them (~2.4 KiB
        # per connection, a sixth of an idle connection's memory).
        ws.request.headers = Headers()
        ws.response.headers = Headers()
        self._connections[conn] = ws
        self.router.connect(conn, path, resume, ws.allowed_id, ws.allowed_room)
        log.debug("conn %s: open on %s from %s", conn, path.value, ws.remote_address)
        cfg = self.config
        if cfg.rate_limit is not None:
            ws.bucket = cfg.rate_limit.bucket(_monotonic())
            assert self._inbox_limit is not None
            ws.inbox = self._inbox_limit.bucket(_monotonic())
        idle_timer = (
            None
            if cfg.idle_timeout is None
            else ws.loop.call_later(cfg.idle_timeout, self._check_idle, conn)
        )
        ws.may_move = self.siblings is not None and path is Path.OFFER and not ws.adopted
        try:
            ws.start(self, conn)
            if ws.adopted:
                ws.feed(initial)
                ws.read_unless_held()  # (paused since it was made, see connection_made)
            self._run_backlog(ws)  # messages that came before this task started
            self.flush()
            await ws.wait_closed()
            # Like a handler stuck in ``await target.send()``: the peer stays
            # registered while its last forward waits for a full target.
            while ws.waiting_on is not None or ws.backlog:
                ws.idle = ws.loop.create_future()
                await ws.idle
        finally:
            if idle_timer is not None:
                idle_timer.cancel()  # (it would keep the closed connection for its delay)
            ws.owner = None
            ws.backlog = None
            # its room's other members hear that it left (Presence "leave")
            self._perform(ws, self.router.leave_room(conn))
            self.flush()
            # A peer that closed with 1000 is leaving: hold nothing for it.
            held = self.router.disconnect(
                conn,
                hold=ws.close_code != CloseCode.NORMAL_CLOSURE,
                grace=self.config.resume_grace,
            )
            if held is not None:
                self._hold(held)
            if self.cluster is not None:
                self._release_freed()
            del self._connections[conn]
            log.debug("conn %s: closed (%s)", conn, ws.close_code)

    def _hold(self, held: Held) -> None:
        """Release ``held`` after the grace period (at once without one)."""
        grace = self.config.resume_grace
        if grace <= 0:
            self.router.release(held)
            return
        previous = self._releases.pop(held.peer_id, None)
        if previous is not None:
            previous.cancel()

        def release() -> None:
            self._releases.pop(held.peer_id, None)
            self.router.release(held)
            self._release_freed()

        self._releases[held.peer_id] = asyncio.get_running_loop().call_later(grace, release)

    # -- routing (receive, flush and drained are called by the connections) ----

    def receive(self, ws: FastPathConnection, message: Message) -> None:
        """Route one message from ``ws`` (not held, nothing queued before it)."""
        # (counted first: a refusal over the rate limit costs a turn's time too)
        self.budget -= 1
        if not self._turn_scheduled:
            self._schedule_turn()
        if ws.may_move and self._try_handover(ws, message):
            return
        bucket = ws.bucket
        if bucket is not None:
            if ws.credits:
                # a reply to what others sent us (an ack, an answer): theirs
                # was charged to them; charging it to us would let anyone
                # push us over our limit (amplification)
                ws.credits -= 1
            else:
                now = _monotonic()  # (cheaper than loop.time(), a method around it)
                verdict = bucket.take(now)
                if verdict != ALLOW:
                    self._over_rate(ws, message, verdict, now)
                    return
        if not self._read_at:  # the first frame of this read (the forwarding latency)
            self._read_at = _monotonic()
        self._perform(ws, self.router.receive(ws.conn_id, message))

    def defer(self, ws: FastPathConnection, message: Message, light: bool = False) -> None:
        """``message`` came when this turn's budget was spent: it waits in
        ``ws``'s backlog, and ``ws`` stops reading until its turn comes
        (``light``: nothing else came with it)."""
        ws.hold(message)
        if not ws.waiting_turn:
            ws.waiting_turn = True
            (self._light if light else self._waiting).append(ws)
            ws.stop_reading()
        if not self._turn_scheduled:
            self._schedule_turn()

    def _schedule_turn(self) -> None:
        """Start a new turn (a fresh budget) at the event loop's next turn."""
        self._turn_scheduled = True
        asyncio.get_running_loop().call_soon(self._next_turn)

    def _next_turn(self) -> None:
        """A new turn of the loop: a fresh budget, spent first on the
        connections that waited, ``turn_messages`` each, round robin (those
        with one message first, within half of the budget while others wait)."""
        self._turn_scheduled = False
        self.budget = self.slice_messages
        half = self.slice_messages // 2
        light, waiting = self._light, self._waiting
        while light and self.budget > 0 and (self.budget > half or not waiting):
            self._take_turn(light.popleft())
        while waiting and self.budget > 0:
            self._take_turn(waiting.popleft())
        self.flush()
        if (light or waiting) and not self._turn_scheduled:
            self._schedule_turn()

    def _take_turn(self, ws: FastPathConnection) -> None:
        """Route up to ``turn_messages`` of ``ws``'s backlog; if more wait, it
        goes to the back of the line."""
        ws.waiting_turn = False
        if ws.backlog and not self._run_backlog(ws, self.turn_messages) and not ws.waiting_turn:
            ws.waiting_turn = True
            self._waiting.append(ws)

    def _over_rate(
        self, ws: FastPathConnection, message: Message, verdict: int, now: float
    ) -> None:
        """``message`` is over ``ws``'s rate limit: 429 (logged once per episode),
        or close 1008 if the excess has lasted too long."""
        limit = self.config.rate_limit
        assert limit is not None and ws.bucket is not None
        if verdict == REFUSE:
            if ws.bucket.over_since == now:  # the first refusal of the episode
                log.info("conn %s: over the rate limit, refusing with 429", ws.conn_id)
            msg = f"rate limit of {limit.rate:g} messages/s exceeded; message dropped"
            self._perform(ws, [self.router.refuse(ws.conn_id, message, TOO_MANY_REQUESTS, msg)])
            # What this read holds is answered (429s); the next read waits, so
            # that a flood costs a few reads a second, not all our CPU time.
            ws.throttle(limit.pause)
            return
        peer_id = self.router.peer_id(ws.conn_id)
        log.warning(
            "conn %s (%s): over the rate limit for %g s, closing",
            ws.conn_id,
            "unregistered" if peer_id is None else clip(peer_id),
            limit.grace,
        )
        self.counters.refuse(RATE_LIMIT_CLOSE)
        ws.fail(CloseCode.POLICY_VIOLATION, "message rate limit exceeded")

    def _check_idle(self, conn: ConnId) -> None:
        """The idle timeout after ``conn`` opened: close it if it has no ID yet."""
        ws = self._connections.get(conn)
        if ws is None or self.router.peer_id(conn) is not None:
            return
        timeout = self.config.idle_timeout
        log.info("conn %s: no ID after %g s, closing", conn, timeout)
        self.counters.refuse(IDLE_TIMEOUT)
        ws.fail(CloseCode.POLICY_VIOLATION, f"no registration or offer within {timeout:g} s")

    def _perform(self, ws: FastPathConnection, actions: list[Action]) -> None:
        """Perform ``actions`` for sender ``ws``; stop and queue the rest if blocked."""
        for i, action in enumerate(actions):
            if isinstance(action, Forward):
                target = self._connections.get(action.target)
                if (
                    target is None
                    and self.whep is not None
                    and self.whep.deliver(action.target, action.frame)
                ):  # a WHEP player's virtual offer peer
                    blocked = self._write(ws, action.ack, ws, None)
                elif target is None or target.protocol.state is not _OPEN:
                    self._perform(ws, self.router.forward_failed(action))
                    blocked = ws.waiting_on is not None
                elif (inbox := target.inbox) is not None and inbox.take(_monotonic()) != ALLOW:
                    # Over the target's inbox budget (what others may forward to
                    # it): refused at the sender (429), so that floods are refused
                    # where they start and the target's own budget stays its own.
                    self._inbox_refused(ws, target, inbox)
                    refusal = self.router.refuse(
                        ws.conn_id, action.frame, TOO_MANY_REQUESTS, _INBOX_FULL
                    )
                    blocked = self._write(ws, refusal.frame, ws, None)
                else:
                    # (the inbox check inline: a call less per relayed message)
                    if inbox is not None and target.credits < MAX_CREDITS:
                        target.credits += 1  # a forwarded frame earns a reply credit
                    self._read_forwards += 1
                    # the ack is held while the forward waits for the target
                    blocked = self._write(target, action.frame, ws, action) or self._write(
                        ws, action.ack, ws, None
                    )
            elif isinstance(action, Send):
                if action.notice:
                    blocked = False
                    self._notify(action.conn, action.frame)
                else:
                    to = self._connections.get(action.conn)
                    blocked = to is not None and self._write(to, action.frame, ws, None)
            else:
                blocked = self._cluster_action(ws, action)
            if blocked:  # the rest waits, in front of any queued message
                for rest in reversed(actions[i + 1 :]):
                    ws.hold(rest, first=True)
                return

    # -- the cluster (only with redis_url) -------------------------------------------

    def _cluster_action(
        self, ws: FastPathConnection, action: Claim | RemoteForward | RoomClaim | RoomLeft
    ) -> bool:
        """Hand a cluster action to the cluster; True if ``ws`` must wait (a
        claim: its next frames wait for the outcome)."""
        cluster = self.cluster
        assert cluster is not None, "a router without a cluster returned a cluster action"
        if isinstance(action, RoomLeft):
            cluster.room_leave(action.room, action.member)
            return False
        if isinstance(action, RoomClaim):
            ws.waiting_on = ws  # (as for a Claim: _room_claimed lets it go)
            cluster.room_join(
                action.room,
                action.member,
                self.config.max_room_size,
                lambda outcome: self._room_claimed(ws, action, outcome),
            )
            return True
        if isinstance(action, Claim):
            ws.waiting_on = ws  # (itself: nobody's buffer; _claimed lets it go)
            cluster.claim(
                action.kind,
                action.peer_id,
                action.resume,
                lambda outcome: self._claimed(ws, action, outcome),
            )
            return True
        text = isinstance(action.frame, str)

        def done(code: int) -> None:
            sender = self._connections.get(action.sender)
            if sender is not None:
                result = self.router.remote_result(
                    action.sender, action.reply, text, code, action.target_id
                )
                self._perform(sender, [result])
                self.flush()

        cluster.forward(
            action.kind, action.source_id, action.target_id, action.node, action.frame, done
        )
        return False

    def _claimed(self, ws: FastPathConnection, claim: Claim, outcome: str) -> None:
        """The cluster's answer to ``ws``'s claim: go on with its frames."""
        if ws.waiting_on is ws:
            ws.waiting_on = None
        self._perform(ws, self.router.claimed(claim, outcome))
        self._release_freed()
        if ws.waiting_on is None:
            self._run_backlog(ws)
        self.flush()

    def _room_claimed(self, ws: FastPathConnection, claim: RoomClaim, outcome: RoomOutcome) -> None:
        """The cluster's answer to ``ws``'s Join: go on with its frames."""
        if ws.waiting_on is ws:
            ws.waiting_on = None
        self._perform(ws, self.router.room_claimed(claim, outcome))
        if ws.waiting_on is None:
            self._run_backlog(ws)
        self.flush()

    def _room_presence(self, event: str, room: str, member: str, node: str, seq: int) -> None:
        """A member on another node joined or left a room with members here."""
        for action in self.router.room_presence(event, room, member, node, seq):
            if isinstance(action, Send):
                self._notify(action.conn, action.frame)
        if self._flush_soon is None:
            self._flush_soon = asyncio.get_running_loop().call_soon(self._flush_later)

    def _deliver_remote(
        self, kind: str, source_id: str, target_id: str, origin: str, frame: Message
    ) -> int:
        """A frame from another node for a peer of ours: write it; its code."""
        conn, code = self.router.deliver_remote(origin, kind, source_id, target_id, frame)
        if conn is None:
            return code
        target = self._connections.get(conn)
        if target is None:
            if self.whep is not None and self.whep.deliver(conn, frame):
                return code
            return NOT_FOUND
        if target.protocol.state is not _OPEN:
            return NOT_FOUND
        target.write_frame(frame)
        if not target.dirty:
            target.dirty = True
            self._dirty.append(target)
        if self._flush_soon is None:  # one flush for the frames of one bus read
            self._flush_soon = asyncio.get_running_loop().call_soon(self._flush_later)
        return code

    def _flush_later(self) -> None:
        self._flush_soon = None
        self.flush()

    def _release_freed(self) -> None:
        """Tell the cluster about the IDs the router let go of."""
        freed = self.router.take_freed()
        if self.cluster is not None:
            for kind, peer_id in freed:
                self.cluster.release(kind, peer_id)

    def _inbox_refused(
        self, sender: FastPathConnection, target: FastPathConnection, inbox: TokenBucket
    ) -> None:
        """A forward from ``sender`` is over ``target``'s inbox budget (no rate
        limit: no inbox, no budget): logged once per episode."""
        if inbox.over_since == inbox.stamp:  # the first refusal of the episode
            log.info(
                "conn %s: forwards to conn %s refused, its inbox is over the rate limit",
                sender.conn_id,
                target.conn_id,
            )

    def _notify(self, conn: ConnId, frame: Message) -> None:
        """Write a frame the server originates (Presence) to ``conn``: it never
        holds anyone up (a few small frames per join or leave), is not charged
        to the receiver's inbox budget, and earns it a credit for its ack."""
        target = self._connections.get(conn)
        if target is None or target.protocol.state is not _OPEN:
            return  # it is leaving; its own departure is on the way
        target.write_frame(frame)
        if target.bucket is not None and target.credits < MAX_CREDITS:
            target.credits += 1
        if not target.dirty:
            target.dirty = True
            self._dirty.append(target)

    def _write_to(self, conn: ConnId, frame: Message) -> bool:
        """Write ``frame`` to connection ``conn`` now (WHEP); False if it is gone."""
        target = self._connections.get(conn)
        if target is None or target.protocol.state is not _OPEN:
            return False
        target.write_frame(frame)
        target.write_pending()
        return True

    def _write(
        self,
        target: FastPathConnection,
        frame: Message,
        sender: FastPathConnection,
        forward: Forward | None,
    ) -> bool:
        """Buffer ``frame`` for ``target``; True if ``sender`` must now wait for it."""
        protocol = target.protocol
        if protocol.state is not _OPEN:
            return False  # as ``send`` raising ConnectionClosed, ignored for replies
        target.write_frame(frame)
        if target.transport.get_write_buffer_size():
            # The target is already behind: write now to learn if it is full,
            # as ``await send()`` would (otherwise: one write per batch).
            target.write_pending()
            if target.paused:
                sender.waiting_on = target
                sender.waiting_for = forward
                if target.blocked is None:
                    target.blocked = []
                target.blocked.append(sender)
                return True
        elif not target.dirty:
            target.dirty = True
            self._dirty.append(target)
        return False

    def flush(self) -> None:
        """Write what was buffered for every connection, one write each."""
        dirty = self._dirty
        while dirty:
            ws = dirty.pop()
            ws.dirty = False
            ws.write_pending()
        if self._read_forwards:  # every forward of this read is in its target's socket now
            self.forward_latency.observe(_monotonic() - self._read_at, self._read_forwards)
            self._read_forwards = 0
        self._read_at = 0.0

    def drained(self, ws: FastPathConnection, failed: bool) -> None:
        """``ws`` drained (or died): let the senders it held go on."""
        senders, ws.blocked = ws.blocked or [], None
        for sender in senders:
            forward, sender.waiting_on, sender.waiting_for = sender.waiting_for, None, None
            if forward is not None:
                if failed:
                    self._perform(sender, self.router.forward_failed(forward))
                else:
                    self._perform(sender, [Send(forward.sender, forward.ack)])
            self._run_backlog(sender)
        self.flush()

    def _run_backlog(self, ws: FastPathConnection, limit: int = -1) -> bool:
        """Route what ``ws`` queued while it was blocked, not started or
        waiting for its turn: all of it, or at most ``limit`` messages. True
        if it is done (or blocked again: then ``drained`` runs the rest)."""
        backlog = ws.backlog
        while backlog and ws.waiting_on is None and limit:
            limit -= 1
            item = backlog.popleft()
            if isinstance(item, bytes | str):
                self.receive(ws, item)
            else:
                self._perform(ws, [item])
        if ws.waiting_on is not None:
            return True
        if backlog:
            return False
        ws.resume_reading()
        if ws.idle is not None and not ws.idle.done():
            ws.idle.set_result(None)
        return True

    # -- keepalive ------------------------------------------------------------------

    async def _keepalive(self, interval: float, timeout: float | None) -> None:
        """Ping every open connection each ``interval``; fail those that stay silent.

        The connections are pinged in batches of ``PING_BATCH`` spread evenly
        over the interval, not all at once: thousands of pings (and of pongs
        coming back) in one go would hold up everyone's messages for tens of
        milliseconds (``benchmarks/load.py``).
        """
        loop = asyncio.get_running_loop()
        await asyncio.sleep(interval)
        while True:
            round_start = loop.time()
            connections = list(self._connections.values())
            batches = max(1, -(-len(connections) // PING_BATCH))
            for b in range(batches):
                self._ping_batch(connections[b * PING_BATCH : (b + 1) * PING_BATCH], timeout)
                await asyncio.sleep(
                    max(0.0, round_start + (b + 1) * interval / batches - loop.time())
                )

    def _ping_batch(self, connections: list[FastPathConnection], timeout: float | None) -> None:
        loop = asyncio.get_running_loop()
        payload = os.urandom(4)
        sent_at = loop.time()
        pinged: list[ConnId] = []
        for ws in connections:
            if ws.ping_payload is not None or ws.protocol.state is not _OPEN:
                continue  # (a closed one is no longer in _connections, or soon)
            ws.send_keepalive_ping(payload, sent_at)
            pinged.append(ws.conn_id)
        if timeout is not None and pinged:
            loop.call_later(timeout, self._check_pongs, pinged, payload)

    def _check_pongs(self, pinged: list[ConnId], payload: bytes) -> None:
        for conn in pinged:
            ws = self._connections.get(conn)
            if ws is not None and ws.ping_payload is payload:
                log.debug("conn %s: no pong within the ping timeout", conn)
                ws.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")


def _import_full_decoder() -> None:
    """Import what :meth:`Router.receive` imports lazily for responses and
    malformed frames (see the call in :meth:`SignalingServer.start`)."""
    import rtc_signal.proto.envelope  # noqa: F401


def _refusal(
    connection: ServerConnection, status: http.HTTPStatus, why: str, logged: str | None = None
) -> Response:
    """An HTTP refusal of the handshake with a one-line plain-text reason
    (``logged``: the reason for the log, if ``why`` has unclipped values)."""
    log.info(
        "refusing a handshake from %s: %d %s",
        connection.remote_address,
        status,
        why if logged is None else logged,
    )
    return connection.respond(status, f"rtc-signal: {why}\n")


def _failed_early(connection: ServerConnection) -> bool:
    """Whether websockets failed ``connection`` before its HTTP response.

    What follows a request goes to websockets' frame parser at once (the
    request may be a handshake), in state CONNECTING. If those bytes are not a
    frame, ``Protocol.fail()`` half-closes the connection (``send_eof``,
    written at once) but leaves the state CONNECTING; the handshake then
    still sends a response, whose ``send_eof`` fails ``assert not
    self.eof_sent``: websockets logs "unexpected internal error" with the
    traceback, and the response is lost anyway (after the EOF). The
    :class:`~signaling.plainhttp.BodySplitter` keeps most such bytes from
    websockets; this catches the rest (bytes that came in a later read).
    """
    protocol = connection.protocol
    return protocol.state is State.CONNECTING and protocol.eof_sent


def _is_upgrade(request: Request) -> bool:
    """Whether ``request`` asks for a WebSocket (rather than a page)."""
    return any("websocket" in value.lower() for value in request.headers.get_all("Upgrade"))


if TYPE_CHECKING:
    from rtc_signal.signaling.cluster import Cluster


async def run_server(config: ServerConfig, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve until SIGINT or SIGTERM, then close every connection with 1001."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with SignalingServer(config) as server:
            if on_ready is not None:
                on_ready(server.url)
            await stop.wait()
            log.info("shutting down: closing %d connections", len(server.router))
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
