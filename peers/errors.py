"""The peer side's exception root: every expected failure is a PeerError.

The CLI turns each into one clear line and a non-zero exit status.
"""

from __future__ import annotations


class PeerError(Exception):
    """Root of every expected peer-side failure.

    ``exit_code`` is the CLI's exit status for it (documented in the README).
    """

    exit_code = 1


class SignalingError(PeerError):
    """The signaling server is unreachable, went away, or misbehaved."""


class HandshakeRefused(SignalingError):
    """The server refused the WebSocket handshake with an HTTP status (401 bad
    or missing token, 403 origin, 503 too many connections...); retrying with
    the same token is pointless for 401/403."""

    def __init__(self, url: str, status: int, reason: str) -> None:
        super().__init__(f"signaling server {url} refused the connection: HTTP {status}: {reason}")
        self.status = status
        self.reason = reason


class Refused(SignalingError):
    """The signaling server answered a request with a non-zero code."""

    def __init__(self, what: str, code: int, msg: str) -> None:
        super().__init__(f"{what} refused by the signaling server: {msg} (code {code})")
        self.code = code
        self.msg = msg


class IdTaken(Refused):
    """Init (register) was refused: another answer peer holds the ID."""


class UnknownTarget(Refused):
    """Offer was refused: no answer peer is registered under the target ID."""


class ConnectTimeout(PeerError):
    """The data channel did not open within the connect timeout."""


class ChannelClosed(PeerError):
    """The data channel closed before the workload was finished."""


class RoomFull(Refused):
    """Join was refused: the room has as many members as the server allows."""
