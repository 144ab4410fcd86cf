"""Liveness and readiness probes, ``GET /healthz`` and ``GET /readyz``
(sans-I/O: a path in, a status, headers and body out).

``/healthz`` answers 200 as long as the event loop serves requests at all
(a process that is alive). ``/readyz`` answers 200 only when every readiness
check passes, else 503 with the reasons, one line: a load balancer stops
sending new clients to a server that is draining or whose connection limit
is reached, without killing it. The checks are plain callables that say why
the server is not ready (or None); the server passes its own (draining, the
accept gate) and a cluster adds "Redis reachable" to the same list.
"""

from __future__ import annotations

import http
from collections.abc import Callable, Sequence
from dataclasses import dataclass

HEALTHZ = "/healthz"
READYZ = "/readyz"
PATHS = frozenset((HEALTHZ, READYZ))

#: why the server is not ready now, or None if this check passes
ReadinessCheck = Callable[[], str | None]

_HEADERS = (
    ("Content-Type", "text/plain; charset=utf-8"),
    # a cached "ready" would hide the moment it stops being true
    ("Cache-Control", "no-store"),
)


@dataclass(frozen=True)
class ProbeResponse:
    status: http.HTTPStatus
    headers: list[tuple[str, str]]
    body: bytes


def not_ready(checks: Sequence[ReadinessCheck]) -> list[str]:
    """The reasons the server is not ready (empty: ready)."""
    return [reason for check in checks if (reason := check()) is not None]


def respond(path: str, checks: Sequence[ReadinessCheck]) -> ProbeResponse:
    """The answer to a probe of ``path`` (one of :data:`PATHS`)."""
    if path == HEALTHZ:
        return ProbeResponse(http.HTTPStatus.OK, list(_HEADERS), b"ok\n")
    if path != READYZ:
        raise ValueError(f"not a probe path: {path!r}")
    reasons = not_ready(checks)
    if reasons:
        body = f"not ready: {'; '.join(reasons)}\n".encode()
        return ProbeResponse(http.HTTPStatus.SERVICE_UNAVAILABLE, list(_HEADERS), body)
    return ProbeResponse(http.HTTPStatus.OK, list(_HEADERS), b"ready\n")
