"""Rooms (commands 5 Join, 6 Presence, 7 Leave): names, member IDs and Presence bodies.

Pure and without pydantic, so that both the server's fast path and the peers
use it. The protocol is in docs/PROTOCOL.md ("Rooms"); in short, a Presence
(6) request's body is UTF-8 JSON, one of::

    {"room":"R","event":"members","members":["a","b"]}  # after Join: the others, oldest first
    {"room":"R","event":"join","member":"c"}            # c joined
    {"room":"R","event":"leave","member":"c"}           # c left (Leave, closed, timed out)

Encoding writes Go's ``encoding/json`` bytes (:mod:`proto.gojson`), so a Go
or JavaScript peer parses them as it would any of the demo's bodies.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Literal

from rtc_signal.proto.commands import Command
from rtc_signal.proto.errors import InvalidPayload
from rtc_signal.proto.gojson import go_string, reject_json_constant

#: what a room name may be: it goes into logs, URLs and token claims as is
ROOM_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
#: the longest member ID (in characters)
MAX_MEMBER_ID = 64

PresenceEvent = Literal["members", "join", "leave"]
_EVENTS: frozenset[str] = frozenset(("members", "join", "leave"))
_json = json.JSONDecoder(parse_constant=reject_json_constant).decode


def is_room_name(name: str) -> bool:
    """Whether ``name`` is a valid room name (``^[A-Za-z0-9._-]{1,64}$``)."""
    return ROOM_NAME.fullmatch(name) is not None


def member_id_problem(member_id: str) -> str | None:
    """Why ``member_id`` cannot be a member ID (None if it can)."""
    if not member_id:
        return "a member ID must not be empty"
    if len(member_id) > MAX_MEMBER_ID:
        return f"a member ID must be at most {MAX_MEMBER_ID} characters"
    return None


@dataclass(frozen=True, slots=True)
class Presence:
    """A decoded Presence body: ``members`` for the list, ``member`` for join/leave."""

    room: str
    event: PresenceEvent
    #: the other members, oldest first (event ``members`` only)
    members: tuple[str, ...] = ()
    #: who joined or left (events ``join`` and ``leave``)
    member: str = ""

    def to_json(self) -> bytes:
        if self.event == "members":
            return members_body(self.room, self.members)
        return event_body(self.room, self.event, self.member)


def members_body(room: str, members: tuple[str, ...] | list[str]) -> bytes:
    """The Presence body sent right after a Join: the other members, oldest first."""
    listed = ",".join(go_string(m) for m in members)
    return f'{{"room":{go_string(room)},"event":"members","members":[{listed}]}}'.encode()


def event_body(room: str, event: str, member: str) -> bytes:
    """The Presence body telling that ``member`` joined or left ``room``."""
    if event not in ("join", "leave"):
        raise ValueError(f"a member event is join or leave, not {event!r}")
    return (
        f'{{"room":{go_string(room)},"event":{go_string(event)},"member":{go_string(member)}}}'
    ).encode()


def parse_presence(body: bytes | None) -> Presence:
    """Decode a Presence body; :class:`~proto.errors.InvalidPayload` if malformed."""

    def bad(why: str) -> InvalidPayload:
        return InvalidPayload(f"presence body: {why}", Command.PRESENCE)

    if not body:
        raise bad("missing")
    try:
        data = _json(body.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise bad(f"not JSON ({exc})") from None
    if type(data) is not dict:
        raise bad("not a JSON object")
    room, event = data.get("room"), data.get("event")
    if type(room) is not str or not is_room_name(room):
        raise bad("room must be a valid room name")
    if type(event) is not str or event not in _EVENTS:
        raise bad("event must be members, join or leave")
    if event == "members":
        members = data.get("members")
        if type(members) is not list or not all(type(m) is str and m for m in members):
            raise bad("members must be a list of non-empty strings")
        return Presence(room, "members", members=tuple(members))
    member = data.get("member")
    if type(member) is not str or not member:
        raise bad("member must be a non-empty string")
    return Presence(room, "join" if event == "join" else "leave", member=member)
