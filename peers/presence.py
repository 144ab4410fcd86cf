"""Presence bodies (command 6) as a room member reads them.

Pure: bytes in, a :class:`Presence` out, :class:`~proto.errors.InvalidPayload`
for anything else. The bodies (docs/PROTOCOL.md, "Rooms"):

- ``{"room":"R","event":"members","members":["a","b"]}``: the other members,
  oldest first, right after our Join;
- ``{"room":"R","event":"join","member":"c"}`` and
  ``{"room":"R","event":"leave","member":"c"}``.

Member IDs come from other clients: empty ones and ones longer than
:data:`MAX_ID` (what the server accepts) are refused, and a list longer than
:data:`MAX_MEMBERS` too, so a misbehaving server cannot make us allocate
without bound.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from rtc_signal.proto.errors import InvalidPayload

#: the longest member ID the server accepts
MAX_ID = 64
#: more members than any room can hold (the server's --max-room-size is far less)
MAX_MEMBERS = 1024

Event = Literal["members", "join", "leave"]


@dataclass(frozen=True)
class Presence:
    room: str
    event: Event
    #: the members list ("members"), or the one member the event is about
    members: tuple[str, ...]


def _member_id(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_ID:
        raise InvalidPayload(f"presence: bad member ID {str(value)[:80]!r}")
    return value


def parse_presence(body: bytes | None) -> Presence:
    """Decode a Presence body; InvalidPayload if it is not one."""
    if not body:
        raise InvalidPayload("presence without a body")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidPayload(f"presence body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidPayload("presence body is not a JSON object")
    room, event = data.get("room"), data.get("event")
    if not isinstance(room, str):
        raise InvalidPayload("presence body has no room")
    if event == "members":
        members = data.get("members")
        if not isinstance(members, list) or len(members) > MAX_MEMBERS:
            raise InvalidPayload("presence members is not a list (or too long)")
        return Presence(room, "members", tuple(_member_id(m) for m in members))
    if event in ("join", "leave"):
        return Presence(room, event, (_member_id(data.get("member")),))
    raise InvalidPayload(f"unknown presence event {str(event)[:40]!r}")
