"""Peer tokens: who may register or call under which ID (pure: no I/O, no clock).

A token is ``base64url(id ":" expiry ":" mac)`` without padding, where ``id``
is the peer ID in UTF-8, ``expiry`` the Unix time (seconds, decimal) after
which the token is refused, and ``mac`` the 32 raw bytes of
``HMAC-SHA256(secret, "rtc-signal-token-v1\\0" id ":" expiry)``.

Why this design and not a JWT: the server needs exactly two claims (the ID
and the expiry) and one algorithm, so there is no header to parse and no
algorithm to negotiate (no ``alg: none`` class of mistakes), and the token
stays short enough for a query string (~60 characters for a short ID). Like
a JWT it is signed, not encrypted: anyone holding it can read the ID and the
expiry (:func:`peek_id` does, so that a peer can default its ID to its
token's), but only the holder of the secret can mint one.

The MAC is over a versioned, domain-separated message so that the same
secret used elsewhere cannot produce a valid token by accident; it is
compared with :func:`hmac.compare_digest` (constant time). The ID is taken as
everything before the last two colons, so IDs may contain colons.

Room tokens (issue 12, docs/PROTOCOL.md "Rooms") grant an ID in one room
only: ``base64url("room:" room "\n" id ":" expiry ":" mac)`` with the MAC
``HMAC-SHA256(secret, "rtc-signal-room-token-v1\0" room "\n" id ":" expiry)``.
The MAC's domain differs from the room-less one, so neither kind can be made
into the other (a room-less token for the ID ``room:R\nX`` carries a MAC of
the other domain). Decoded bytes that start with ``room:`` and hold a
``\n`` are read as a room token (a room name cannot hold ``\n``).
:func:`verify` returns the ID and the room (None for a room-less token);
the server accepts room tokens on ``/room`` only, and room-less ones
everywhere else.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from typing import NamedTuple
from urllib.parse import parse_qs, urlsplit

_DOMAIN = b"rtc-signal-token-v1\0"
_ROOM_DOMAIN = b"rtc-signal-room-token-v1\0"
_ROOM_PREFIX = b"room:"
_MAC_SIZE = hashlib.sha256().digest_size
#: a secret shorter than this is refused: the MAC is only as strong as the secret
MIN_SECRET_LENGTH = 16
#: tokens longer than this are refused before any decoding (bounded work)
MAX_TOKEN_LENGTH = 2048
#: ``30``, ``90s``, ``15m``, ``1h``, ``7d``
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class TokenError(ValueError):
    """A token that must be refused; the message says why (safe to show the client)."""


def check_secret(secret: str) -> bytes:
    """The secret as bytes; ValueError if it is too short to be safe."""
    if len(secret) < MIN_SECRET_LENGTH:
        raise ValueError(
            f"the secret must be at least {MIN_SECRET_LENGTH} characters long "
            "(for example: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return secret.encode()


class Grant(NamedTuple):
    """What a valid token grants: an ID, in one room or (``room`` None) outside rooms."""

    peer_id: str
    room: str | None


def _mac(secret: bytes, claims: bytes, room: bool = False) -> bytes:
    """The MAC of ``claims``: those of a room token start with ``room:R\n``."""
    domain = _ROOM_DOMAIN if room else _DOMAIN
    return hmac.new(secret, domain + claims, hashlib.sha256).digest()


def mint(secret: bytes, peer_id: str, expires_at: int, room: str | None = None) -> str:
    """A token for ``peer_id`` valid until the Unix time ``expires_at``; with
    ``room``, valid for that room only (and only on ``/room``)."""
    if not peer_id:
        raise ValueError("a token needs a non-empty peer ID")
    claims = f"{peer_id}:{int(expires_at)}".encode()
    if room is not None:
        # (imported here: proto.rooms is not needed to verify room-less tokens)
        from rtc_signal.proto.rooms import is_room_name

        if not is_room_name(room):
            raise ValueError(f"bad room name {room!r} (1-64 of A-Z a-z 0-9 . _ -)")
        claims = _ROOM_PREFIX + room.encode() + b"\n" + claims
    elif claims.startswith(_ROOM_PREFIX) and b"\n" in claims:
        raise ValueError("a room-less token's ID cannot start with 'room:' and hold a newline")
    raw = claims + b":" + _mac(secret, claims, room is not None)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _split(token: str) -> tuple[bytes, str, str | None, int, bytes]:
    """(claims, peer ID, room, expiry, MAC) of a well-formed token; TokenError otherwise."""
    if not token:
        raise TokenError("empty token")
    if len(token) > MAX_TOKEN_LENGTH:
        raise TokenError(f"token longer than {MAX_TOKEN_LENGTH} characters")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise TokenError("token is not base64url") from None
    if len(raw) < _MAC_SIZE + 4 or raw[-_MAC_SIZE - 1] != ord(":"):
        raise TokenError("malformed token") from None
    claims, mac = raw[: -_MAC_SIZE - 1], raw[-_MAC_SIZE:]
    room: str | None = None
    rest = claims
    if claims.startswith(_ROOM_PREFIX) and b"\n" in claims:
        room_raw, _, rest = claims[len(_ROOM_PREFIX) :].partition(b"\n")
        room = room_raw.decode("ascii", "replace")
    peer_id_raw, sep, expiry_raw = rest.rpartition(b":")
    if not sep or not peer_id_raw or not expiry_raw.isdigit() or len(expiry_raw) > 12:
        raise TokenError("malformed token")
    try:
        peer_id = peer_id_raw.decode()
    except UnicodeDecodeError:
        raise TokenError("malformed token") from None
    return claims, peer_id, room, int(expiry_raw), mac


def verify(secret: bytes, token: str, now: float) -> Grant:
    """The peer ID (and room, for a room token) ``token`` grants at Unix time
    ``now``; TokenError if it is malformed, forged (wrong MAC) or expired."""
    claims, peer_id, room, expires_at, mac = _split(token)
    # The MAC first: a forged token learns nothing from the other checks.
    if not hmac.compare_digest(mac, _mac(secret, claims, room is not None)):
        raise TokenError("token signature does not match (forged, or minted with another secret)")
    if now >= expires_at:
        raise TokenError(f"token for {peer_id!r} expired")
    return Grant(peer_id, room)


def peek_id(token: str) -> str:
    """The peer ID a token claims, without checking it (no secret needed)."""
    return _split(token)[1]


def peek_room(token: str) -> str | None:
    """The room a token claims (None for a room-less one), without checking it."""
    return _split(token)[2]


def parse_duration(text: str) -> float:
    """Seconds in ``30``, ``90s``, ``15m``, ``1h`` or ``7d``; ValueError otherwise."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"bad duration {text!r} (examples: 90s, 15m, 1h, 7d)")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"the duration must be positive, not {text!r}")
    return seconds


def token_from_request(path: str, authorization: str | None) -> str | None:
    """The token a WebSocket handshake presents: ``Authorization: Bearer T``
    (non-browser clients) or the ``token`` query parameter (browsers cannot
    set headers on a WebSocket). The header wins if both are present."""
    if authorization is not None:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    query = urlsplit(path).query
    if "token=" not in query:
        return None
    values = parse_qs(query, keep_blank_values=True).get("token")
    return values[0] if values else None
