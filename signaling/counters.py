"""The server's own counters for ``/metrics`` (pure bookkeeping, no I/O).

The router already counts frames and responses (``RouterStats``) and the
accept gate its refusals; these are the counts only the I/O layer sees:
bytes on the wire, connection-level refusals, HTTP responses, and the
forwarding latency. They are plain integers bumped in place, so that the hot
path pays an addition; :mod:`signaling.metrics` turns them into Prometheus
metrics when someone scrapes (nothing here imports ``prometheus_client``).

The cluster counters (:attr:`ServerCounters.cluster_messages`,
:attr:`ServerCounters.redis_errors`) stay 0 in a single process: they are
here so that the metric names exist (dashboards and alerts can be written
now) and the cluster code has a place to count, by name.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

#: upper bounds (seconds) of the forwarding latency histogram's buckets: a
#: forward on an idle server takes tens of microseconds, a loaded one
#: milliseconds; beyond a second something is wrong
LATENCY_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)

#: connection-level refusal reasons (README "Metrics and health"); the
#: frame-level ones come from the router's response codes
GATE_FULL = "gate_full"
GATE_EVICTED = "gate_evicted"
HANDSHAKE_TIMEOUT = "handshake_timeout"
HANDSHAKE_REFUSED = "handshake_refused"
RATE_LIMIT_CLOSE = "rate_limit_close"
IDLE_TIMEOUT = "idle_timeout"
PING_TIMEOUT = "ping_timeout"

CLUSTER_DIRECTIONS = ("sent", "received")


@dataclass(slots=True)
class ServerCounters:
    """What the I/O layer counts. Every field only grows (Prometheus counters)."""

    #: bytes read from and written to client sockets (handshakes, HTTP and
    #: frames; with TLS, the bytes inside it)
    bytes_in: int = 0
    bytes_out: int = 0
    #: connection-level refusals and closes, by reason (the constants above)
    refusals: dict[str, int] = field(default_factory=dict)
    #: plain HTTP and handshake responses by status code (101: a WebSocket)
    http_responses: dict[int, int] = field(default_factory=dict)
    #: frames exchanged with other nodes through the cluster bus, by
    #: direction (sent, received); 0 without a cluster
    cluster_messages: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(CLUSTER_DIRECTIONS, 0)
    )
    #: failed calls to Redis; 0 without a cluster
    redis_errors: int = 0
    #: ``--workers``: /offer connections handed to a sibling worker ("out")
    #: and taken from one ("in") (signaling/handover.py)
    moved: dict[str, int] = field(default_factory=lambda: {"out": 0, "in": 0})

    def refuse(self, reason: str) -> None:
        """Count one connection-level refusal (or policy close) for ``reason``."""
        self.refusals[reason] = self.refusals.get(reason, 0) + 1

    def respond(self, status: int) -> None:
        """Count one HTTP response with ``status``."""
        self.http_responses[status] = self.http_responses.get(status, 0) + 1


class LatencyHistogram:
    """Cumulative-on-read histogram of durations, for the forward path.

    Cheaper than ``prometheus_client.Histogram.observe`` (a lock and a Python
    loop per value): one C ``bisect`` per :meth:`observe`, which records
    ``count`` equal values at once (the forwards of one read share their
    receipt time); the Prometheus form (cumulative buckets) is built at
    scrape time.
    """

    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        if list(bounds) != sorted(set(bounds)) or not bounds:
            raise ValueError("bucket bounds must be increasing and not empty")
        self.bounds = bounds
        #: values per bucket (not cumulative); the last one is above every bound
        self.counts = [0] * (len(bounds) + 1)
        self.count = 0
        self.total = 0.0

    def observe(self, value: float, count: int = 1) -> None:
        """Record ``value`` ``count`` times."""
        self.counts[bisect.bisect_left(self.bounds, value)] += count
        self.count += count
        self.total += value * count

    def cumulative(self) -> list[tuple[str, int]]:
        """``(upper bound, values at or below it)`` pairs, ending with ``+Inf``,
        as Prometheus histograms expose them."""
        buckets: list[tuple[str, int]] = []
        running = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            running += n
            buckets.append((repr(bound), running))
        buckets.append(("+Inf", running + self.counts[-1]))
        return buckets
