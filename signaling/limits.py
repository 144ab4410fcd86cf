"""Per-connection message rate limit (pure: the caller passes the time).

A token bucket: ``burst`` messages may come at once, then ``rate`` per second.
A message over the limit is refused (the server answers it with 429 and
drops it). The server also stops reading from a connection for ``pause`` seconds after
refusing one of its messages, so that a flood is held back by TCP instead of
costing CPU time. A client that *keeps* sending over the limit is cut off: once it
has been over the limit for ``grace`` seconds without the bucket ever filling
up again (which takes ``burst / rate`` seconds of compliance), :meth:`take`
says CLOSE. A client that only bursts now and then gets the odd 429 and is
never closed; a flooder is closed ``grace`` seconds into its flood.

Cost per message: a few float operations and no allocation beyond the
floats, so that the limiter can stay on in front of the fast path
(``benchmarks/relay.py``; figures in the README's Security model section).
"""

from __future__ import annotations

from dataclasses import dataclass

#: frames larger than this (bytes) are refused with 413 (--max-frame-size)
DEFAULT_MAX_FRAME = 64 * 1024

ALLOW = 0
REFUSE = 1
CLOSE = 2


@dataclass(frozen=True, slots=True)
class RateLimit:
    """``rate`` messages per second after a ``burst``; close after ``grace``
    seconds of sustained excess."""

    rate: float
    burst: float
    grace: float = 5.0
    #: how long the server stops reading a connection after refusing one of
    #: its messages (the rest of what it had read is still answered)
    pause: float = 0.1

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1 or self.grace < 0 or self.pause < 0:
            raise ValueError(f"bad rate limit {self}: rate > 0, burst >= 1, grace >= 0, pause >= 0")

    def bucket(self, now: float) -> TokenBucket:
        return TokenBucket(self, now)


class TokenBucket:
    """One connection's bucket (full at creation)."""

    # rate and burst copied from the limit: one attribute load each per message
    __slots__ = ("burst", "grace", "over_since", "rate", "stamp", "tokens")

    def __init__(self, limit: RateLimit, now: float) -> None:
        self.rate = limit.rate
        self.burst = limit.burst
        self.grace = limit.grace
        self.tokens = limit.burst
        self.stamp = now
        #: when the current run of excess began (None: the bucket has been full since)
        self.over_since: float | None = None

    def take(self, now: float) -> int:
        """Account for one message at ``now``: ALLOW, REFUSE or CLOSE."""
        tokens = self.tokens + (now - self.stamp) * self.rate
        self.stamp = now
        if tokens >= self.burst:
            tokens = self.burst
            self.over_since = None  # complied long enough: forgive the past excess
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return ALLOW
        self.tokens = tokens
        if self.over_since is None:
            self.over_since = now
        elif now - self.over_since >= self.grace:
            return CLOSE
        return REFUSE
