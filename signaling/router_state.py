"""What the router keeps per connection and per held ID, and its counters
(plain data shared by :mod:`signaling.router` and :mod:`signaling.router_cluster`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from rtc_signal.proto.commands import Command
from rtc_signal.signaling.actions import Path
from rtc_signal.signaling.logtext import clip


@dataclass(slots=True)
class ConnState:
    """What the router knows of one connection."""

    path: Path
    #: the registered (answer) or bound (offer) peer ID, once known
    peer_id: str | None = None
    #: the answer peer's resume key (query parameter of /register), if any
    resume: str | None = None
    #: the only ID this connection may use (its token's), or None: any ID
    allowed_id: str | None = None
    #: the only room it may join (its room token's), or None
    allowed_room: str | None = None
    #: how many of its frames were refused (for the log)
    refusals: int = 0
    #: the ID claimed across the cluster for it (clustered routers only)
    claimed: str | None = None


@dataclass(frozen=True, slots=True)
class Hold:
    """An answer peer's ID held for its resume key."""

    resume: str
    token: int
    #: the grace period the I/O layer holds it for (seconds), if it said
    grace: float | None = None


@dataclass
class RouterStats:
    frames: int = 0
    forwarded: int = 0
    errors: int = 0
    by_code: dict[int, int] = field(default_factory=dict)
    #: frames by command (None: a frame whose command could not be read)
    by_command: dict[Command | None, int] = field(default_factory=dict)
    #: connections made, by path (for /metrics)
    connections: dict[Path, int] = field(default_factory=dict)


def not_token_id(peer_id: str, state: ConnState) -> str:
    """The refusal of an ID that is not the one of the connection's token."""
    token_id = clip(state.allowed_id)
    return f"source {clip(peer_id)} is not the ID of this connection's token ({token_id})"
