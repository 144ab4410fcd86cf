"""``GET /metrics``: the server's state in the Prometheus text format.

Nothing on the relay path calls ``prometheus_client``: the router keeps its
:class:`~signaling.router.RouterStats`, the accept gate its refusals, the
I/O layer its :class:`~signaling.counters.ServerCounters` and forwarding
latency, all plain integers. :class:`SignalingCollector` reads them when
someone scrapes (a custom collector), so a relayed frame pays a few additions
and a scrape pays a pass over the open connections.

Each server has its own :class:`~prometheus_client.CollectorRegistry` (never
the process-wide default), so that several servers in one process (tests,
``--workers``) do not clash. The metric names and labels are listed in the
README, "Metrics and health"; to add one (rooms, the cluster), read it in
:meth:`SignalingCollector.collect` from a small query method of the part that
owns it.
"""

from __future__ import annotations

import hashlib
import hmac
import http
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)

from rtc_signal.proto import __version__
from rtc_signal.proto.commands import Command
from rtc_signal.signaling.actions import (
    BAD_REQUEST,
    CONFLICT,
    FORBIDDEN,
    NOT_FOUND,
    OK,
    TOO_LARGE,
    TOO_MANY_REQUESTS,
    Path,
)
from rtc_signal.signaling.counters import (
    GATE_EVICTED,
    GATE_FULL,
    HANDSHAKE_REFUSED,
    HANDSHAKE_TIMEOUT,
    IDLE_TIMEOUT,
    RATE_LIMIT_CLOSE,
    LatencyHistogram,
    ServerCounters,
)
from rtc_signal.signaling.gate import AcceptGate
from rtc_signal.signaling.router import Router

PATH = "/metrics"
PREFIX = "rtc_signal"

#: frame-level refusals: the reason of each error code the router answers with
CODE_REASONS = {
    BAD_REQUEST: "bad_request",
    FORBIDDEN: "forbidden",
    NOT_FOUND: "not_found",
    CONFLICT: "conflict",
    TOO_LARGE: "too_large",
    TOO_MANY_REQUESTS: "rate_limit",
}
#: every refusal reason, exposed from the start (at 0) so that rate() and
#: alerts work before the first refusal
REASONS = (
    *CODE_REASONS.values(),
    GATE_FULL,
    GATE_EVICTED,
    HANDSHAKE_TIMEOUT,
    HANDSHAKE_REFUSED,
    RATE_LIMIT_CLOSE,
    IDLE_TIMEOUT,
)
#: the request commands and response codes, always exposed (others once seen)
REQUESTS = (Command.INIT, Command.ANSWER, Command.OFFER, Command.CANDIDATE)
CODES = (OK, *CODE_REASONS)


def path_label(path: Path) -> str:
    """``register``, ``offer``: a connection path as a label value."""
    return path.value.strip("/")


def command_label(command: Command | None) -> str:
    """``init``, ``offer_response``...; ``unknown`` for an unreadable command."""
    return "unknown" if command is None else command.name.lower()


class SignalingCollector:
    """A Prometheus collector reading one server's state at scrape time."""

    def __init__(
        self,
        router: Router,
        counters: ServerCounters,
        latency: LatencyHistogram,
        gate: AcceptGate[Any],
        ready: Callable[[], bool],
        cluster: Callable[[], tuple[int, int, int]] | None = None,
    ) -> None:
        """``cluster``, on a cluster node: (frames sent to, received from
        other nodes, failed Redis calls), read at scrape time."""
        self.cluster = cluster
        self.router = router
        self.counters = counters
        self.latency = latency
        self.gate = gate
        self.ready = ready

    def collect(self) -> Iterable[Metric]:
        router, counters, stats = self.router, self.counters, self.router.stats

        info = InfoMetricFamily(f"{PREFIX}_build", "rtc-signal's version")
        info.add_metric([], {"version": __version__})
        yield info
        yield GaugeMetricFamily(
            f"{PREFIX}_ready", "1 while /readyz answers 200", value=int(self.ready())
        )

        # -- connections ----------------------------------------------------
        open_ = GaugeMetricFamily(
            f"{PREFIX}_connections", "Open WebSocket connections by path", labels=["path"]
        )
        for path, n in router.connection_paths().items():
            open_.add_metric([path_label(path)], n)
        yield open_
        accepted = CounterMetricFamily(
            f"{PREFIX}_connections_accepted",
            "WebSocket connections accepted by path",
            labels=["path"],
        )
        for path in Path:
            accepted.add_metric([path_label(path)], stats.connections.get(path, 0))
        yield accepted
        yield GaugeMetricFamily(
            f"{PREFIX}_tcp_connections",
            "Open TCP connections counted by the connection limit (handshakes, HTTP included)",
            value=len(self.gate),
        )
        if self.gate.limit is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}_tcp_connections_limit",
                "The connection limit (--max-connections)",
                value=self.gate.limit,
            )

        # -- peers, calls, rooms ----------------------------------------------
        peers = GaugeMetricFamily(f"{PREFIX}_peers", "Registered peer IDs by role", labels=["role"])
        peers.add_metric(["answer"], router.answer_count())
        peers.add_metric(["offer"], router.offer_count())
        yield peers
        yield GaugeMetricFamily(
            f"{PREFIX}_held_peers",
            "Answer-peer IDs held for their peer to reconnect",
            value=router.held_count(),
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_calls", "Calls known to the router", value=router.calls()
        )
        rooms, members = router.room_counts()
        yield GaugeMetricFamily(f"{PREFIX}_rooms", "Open rooms", value=rooms)
        yield GaugeMetricFamily(f"{PREFIX}_room_members", "Members of all rooms", value=members)

        # -- frames and responses -------------------------------------------
        frames = CounterMetricFamily(
            f"{PREFIX}_frames", "Data frames received by command", labels=["command"]
        )
        by_command = dict.fromkeys(REQUESTS, 0) | stats.by_command
        for command, n in sorted(by_command.items(), key=lambda item: item[0] or 0):
            frames.add_metric([command_label(command)], n)
        yield frames
        yield CounterMetricFamily(
            f"{PREFIX}_frames_forwarded",
            "Frames the router forwarded to their target",
            value=stats.forwarded,
        )
        responses = CounterMetricFamily(
            f"{PREFIX}_responses",
            "Response frames the server sent, by code (0: ok)",
            labels=["code"],
        )
        for code, n in sorted((dict.fromkeys(CODES, 0) | stats.by_code).items()):
            responses.add_metric([str(code)], n)
        yield responses
        yield _by_label(
            f"{PREFIX}_refusals",
            "Refused frames and connections by reason",
            "reason",
            self._refusals(),
        )
        yield _by_label(
            f"{PREFIX}_http_responses",
            "Plain HTTP and WebSocket-handshake responses by status (101: WebSocket)",
            "status",
            {str(status): n for status, n in sorted(counters.http_responses.items())},
        )

        # -- bytes, latency ---------------------------------------------------
        yield CounterMetricFamily(
            f"{PREFIX}_received_bytes", "Bytes read from client sockets", value=counters.bytes_in
        )
        yield CounterMetricFamily(
            f"{PREFIX}_sent_bytes", "Bytes written to client sockets", value=counters.bytes_out
        )
        latency = HistogramMetricFamily(
            f"{PREFIX}_forward_latency_seconds",
            "From a frame's receipt to the forwarded frame handed to the target's socket",
        )
        latency.add_metric([], self.latency.cumulative(), self.latency.total)
        yield latency

        # -- the cluster (0 in a single process) --------------------------------
        messages, redis_errors = counters.cluster_messages, counters.redis_errors
        if self.cluster is not None:
            sent, received, redis_errors = self.cluster()
            messages = {"sent": sent, "received": received}
        yield _by_label(
            f"{PREFIX}_cluster_messages",
            "Frames exchanged with other nodes through the cluster bus",
            "direction",
            messages,
        )
        yield CounterMetricFamily(
            f"{PREFIX}_redis_errors", "Failed calls to Redis", value=redis_errors
        )
        yield _by_label(
            f"{PREFIX}_connections_moved",
            "/offer connections moved to (out) or from (in) a sibling worker",
            "direction",
            counters.moved,
        )

    def _refusals(self) -> dict[str, int]:
        refusals = dict.fromkeys(REASONS, 0)
        for code, reason in CODE_REASONS.items():
            refusals[reason] = self.router.stats.by_code.get(code, 0)
        refusals[GATE_FULL] = self.gate.refused
        refusals[GATE_EVICTED] = self.gate.evicted
        for reason, n in self.counters.refusals.items():
            refusals[reason] = refusals.get(reason, 0) + n
        return refusals


def _by_label(name: str, documentation: str, label: str, values: dict[str, int]) -> Metric:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value, n in values.items():
        family.add_metric([value], n)
    return family


@dataclass(frozen=True)
class MetricsResponse:
    status: http.HTTPStatus
    headers: list[tuple[str, str]]
    body: bytes


_TEXT = "text/plain; charset=utf-8"


class MetricsEndpoint:
    """``/metrics`` of one server: its own registry and optional bearer token."""

    def __init__(self, collector: SignalingCollector, token: str | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        #: the token's digest: comparing digests takes the same time whatever
        #: the length of what a client sends
        self._digest = None if not token else _digest(token)

    @property
    def protected(self) -> bool:
        return self._digest is not None

    def authorized(self, authorization: Sequence[str]) -> bool:
        """Whether the request's ``Authorization`` header values let it read."""
        if self._digest is None:
            return True
        if len(authorization) != 1:
            return False
        scheme, _, token = authorization[0].strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(_digest(token.strip()), self._digest)

    def respond(self, authorization: Sequence[str]) -> MetricsResponse:
        """The answer to ``GET /metrics`` with these ``Authorization`` values."""
        if not self.authorized(authorization):
            return MetricsResponse(
                http.HTTPStatus.UNAUTHORIZED,
                [
                    ("Content-Type", _TEXT),
                    ("WWW-Authenticate", 'Bearer realm="rtc-signal metrics"'),
                ],
                b"rtc-signal: /metrics needs its bearer token (Authorization: Bearer TOKEN)\n",
            )
        return MetricsResponse(
            http.HTTPStatus.OK,
            [("Content-Type", CONTENT_TYPE_PLAIN_0_0_4), ("Cache-Control", "no-store")],
            generate_latest(self.registry),
        )


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
