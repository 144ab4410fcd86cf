"""Reconnecting to the signaling server: the backoff schedule and the resume key.

Pure parts only (no I/O, no clock): :class:`AnswerPeer` in
:mod:`peers.session` sleeps for the delays :class:`Backoff` gives it.

- **Exponential backoff with full jitter** (as in AWS's "Exponential Backoff
  and Jitter"): attempt ``n`` (0-based) waits a uniformly random time in
  ``[0, min(max_delay, base * factor**n)]``. The jitter spreads the
  reconnects of every peer that lost the same server, so a restarted server
  is not hit by all of them in the same instant; the cap bounds how long a
  peer can stay away once the server is back.
- **Resume key**: a random secret the answer peer sends as the ``resume``
  query parameter of ``/register``. When its connection drops, the server
  holds the peer's ID for a grace period, and only a registration from a
  connection with the same key gets it back (PeerJS's token re-attach). The
  wire frames do not change: Go peers simply send no key and get no hold.
"""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass
from urllib.parse import quote

#: the query parameter (the server accepts keys of up to 64 characters)
RESUME_PARAM = "resume"


@dataclass(frozen=True)
class ReconnectPolicy:
    """How an answer peer retries after losing the signaling server."""

    #: the cap of the first retry's delay, in seconds
    base_delay: float = 0.5
    #: the cap never exceeds this (seconds)
    max_delay: float = 30.0
    factor: float = 2.0
    #: full jitter (a uniform delay in [0, cap]); False waits exactly the cap,
    #: which makes every peer of a restarted server come back at once (the
    #: baseline of ``benchmarks/reconnect.py``)
    jitter: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.base_delay <= self.max_delay:
            raise ValueError(
                f"need 0 < base delay ({self.base_delay}) <= max delay ({self.max_delay})"
            )
        if self.factor < 1:
            raise ValueError(f"backoff factor must be >= 1, got {self.factor}")

    def cap(self, attempt: int) -> float:
        """The upper bound of attempt ``attempt``'s (0-based) delay."""
        # min() before the power would overflow: the cap is reached long before
        exponent = min(attempt, 64)
        return min(self.max_delay, self.base_delay * self.factor**exponent)


class Backoff:
    """Successive retry delays of one outage; :meth:`reset` once it is over."""

    def __init__(self, policy: ReconnectPolicy, rng: random.Random | None = None) -> None:
        self.policy = policy
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        """The delay before the next attempt (full jitter), and count it."""
        cap = self.policy.cap(self.attempt)
        self.attempt += 1
        return self._rng.uniform(0.0, cap) if self.policy.jitter else cap

    def reset(self) -> None:
        self.attempt = 0


def new_resume_key() -> str:
    """A fresh random resume key (URL-safe, 128 bits)."""
    return secrets.token_urlsafe(16)


def register_path(resume_key: str | None) -> str:
    """The ``/register`` path, with the resume key as a query parameter if any."""
    if resume_key is None:
        return "/register"
    return f"/register?{RESUME_PARAM}={quote(resume_key, safe='')}"
