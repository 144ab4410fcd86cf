"""ICE configuration: explicit servers only, and host candidates we choose.

aiortc's ``RTCConfiguration()`` silently falls back to a public Google STUN
server; we always pass an explicit (by default empty) list. aioice gathers
every non-loopback address of the machine and never 127.0.0.1; with
:func:`restrict_host_addresses` the caller picks the host addresses instead
(tests use 127.0.0.1, so nothing leaves loopback).
"""

from __future__ import annotations

import contextlib
import contextvars
import ipaddress
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from rtc_signal.peers.errors import PeerError

TransportPolicy = Literal["all", "relay"]

# Which host addresses aioice may use in the current task (None = its default).
_host_addresses: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar(
    "rtc_signal_host_addresses", default=None
)
_original_get_host_addresses = aioice.ice.get_host_addresses


def _get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    chosen = _host_addresses.get()
    if chosen is None:
        return _original_get_host_addresses(use_ipv4, use_ipv6)
    return [addr for addr in chosen if (use_ipv4 and ":" not in addr) or (use_ipv6 and ":" in addr)]


# aioice has no per-connection hook for this; the patch only changes
# behaviour inside restrict_host_addresses(), and only for the calling task
# (and tasks it starts), because the choice lives in a context variable.
aioice.ice.get_host_addresses = _get_host_addresses


@contextlib.contextmanager
def restrict_host_addresses(addresses: Sequence[str] | None) -> Iterator[None]:
    """Within this block (this task and its children), gather host candidates
    only on ``addresses`` (None keeps aioice's default)."""
    token = _host_addresses.set(None if addresses is None else tuple(addresses))
    try:
        yield
    finally:
        _host_addresses.reset(token)


@dataclass(frozen=True)
class IceSettings:
    """ICE servers and candidate policy of a peer. Nothing public by default."""

    servers: tuple[str, ...] = ()
    username: str | None = None
    credential: str | None = None
    transport_policy: TransportPolicy = "all"
    #: restrict host candidates to these addresses (None = all but loopback)
    host_addresses: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for url in self.servers:
            scheme = url.split(":", 1)[0]
            if scheme not in ("stun", "stuns", "turn", "turns") or ":" not in url:
                raise PeerError(f"not an ICE server URL (stun:/turn:): {url!r}")
        for addr in self.host_addresses or ():
            try:
                ipaddress.ip_address(addr)
            except ValueError:
                raise PeerError(f"--host-address needs an IP address, got {addr!r}") from None

    def rtc_configuration(self) -> RTCConfiguration:
        servers = [
            RTCIceServer(urls=url, username=self.username, credential=self.credential)
            if url.startswith("turn")
            else RTCIceServer(urls=url)
            for url in self.servers
        ]
        # Always an explicit list: an empty one means "no STUN/TURN at all".
        policy = (
            RTCIceTransportPolicy.RELAY
            if self.transport_policy == "relay"
            else RTCIceTransportPolicy.ALL
        )
        return RTCConfiguration(iceServers=servers, iceTransportPolicy=policy)


def check_host_addresses(addresses: Sequence[str]) -> None:
    """PeerError unless every address is one of this machine's: aioice would
    skip an address it cannot bind to and the call would wait out its whole
    timeout with no candidate, so this binds a UDP socket to each first."""
    for addr in addresses:
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.bind((addr, 0))
        except OSError as exc:
            raise PeerError(
                f"{addr} is not an address of this machine "
                f"(cannot bind a UDP socket to it: {exc.strerror or exc})"
            ) from None


def no_candidate_problem(local_sdp: str, settings: IceSettings) -> str | None:
    """Why a local description that offers no ICE candidate at all cannot
    connect, with what to do about it; None when it has a candidate.

    With no candidate ICE can never succeed, whatever the remote end does,
    so the caller can say so at once instead of waiting out the timeout.
    """
    if any(line.startswith("a=candidate:") for line in local_sdp.splitlines()):
        return None
    if settings.transport_policy == "relay":
        return (
            "no ICE candidate: --ice-transport-policy relay uses TURN candidates only, "
            "and no TURN server gave one (check --ice-server turn:..., "
            "--ice-username and --ice-credential)"
        )
    if settings.host_addresses:
        where = f"on --host-address {', '.join(settings.host_addresses)}"
    else:
        where = (
            "on this machine: it has no network address but loopback, which is skipped "
            "unless given with --host-address"
        )
    if settings.servers:
        where += ", and no ICE server gave one"
    hint = (
        "; for a call between peers on this machine use --host-address 127.0.0.1, "
        "to reach other machines give an address of a network interface or an ICE server "
        "(--ice-server stun:... or turn:...)"
    )
    return f"no ICE candidate could be gathered {where}" + hint


@dataclass(frozen=True)
class SelectedPair:
    """The ICE candidate pair a connection uses: types (host, srflx, prflx,
    relay) and transport addresses of both ends."""

    local_type: str
    local_address: tuple[str, int]
    remote_type: str
    remote_address: tuple[str, int]

    def __str__(self) -> str:
        (lhost, lport), (rhost, rport) = self.local_address, self.remote_address
        return f"{self.local_type} {lhost}:{lport} -> {self.remote_type} {rhost}:{rport}"


def selected_pair(pc: RTCPeerConnection) -> SelectedPair | None:
    """The nominated pair of ``pc``'s (data channel) transport, None if none yet.

    aiortc does not expose it (no getStats() candidate-pair entry for data
    channels), so this reads aioice's Connection behind the ICE transport;
    anything missing (another aiortc/aioice layout) gives None, not an error.
    """
    sctp = pc.sctp
    ice_transport = getattr(getattr(sctp, "transport", None), "transport", None)
    connection = getattr(ice_transport, "_connection", None)
    nominated = getattr(connection, "_nominated", None)
    if not isinstance(nominated, dict) or not nominated:
        return None
    pair = nominated[min(nominated)]
    try:
        local, remote = pair.local_candidate, pair.remote_candidate
        return SelectedPair(
            str(local.type),
            (str(local.host), int(local.port)),
            str(remote.type),
            (str(remote.host), int(remote.port)),
        )
    except (AttributeError, TypeError, ValueError):
        return None
