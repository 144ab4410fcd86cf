"""The rooms the server knows of: who is in which room, in join order (pure bookkeeping).

Sans-I/O and clock-free. A room exists while it has members (it is created by
its first Join and vanishes with its last member); a connection is a member
of at most one room at a time; member IDs are unique within a room, not
across rooms. The rules that answer commands with these facts are in
:mod:`signaling.room_rules`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rtc_signal.signaling.actions import CONFLICT, SERVICE_UNAVAILABLE, ConnId
from rtc_signal.signaling.logtext import clip

#: members a room may have at once (``--max-room-size``)
DEFAULT_MAX_ROOM_SIZE = 16


@dataclass(slots=True)
class Membership:
    """One connection's place in a room."""

    room: str
    member: str
    #: when it joined (a server-wide counter): the later joiner of a pair offers
    seq: int
    #: its frames are text (else binary): what the server sends it is alike
    text: bool


@dataclass(frozen=True, slots=True)
class Refusal:
    code: int
    msg: str


@dataclass(slots=True)
class RoomTable:
    max_size: int = DEFAULT_MAX_ROOM_SIZE
    #: room -> {member ID: connection}, oldest member first (dicts keep order)
    _rooms: dict[str, dict[str, ConnId]] = field(default_factory=dict)
    _by_conn: dict[ConnId, Membership] = field(default_factory=dict)
    #: member ID -> in how many rooms it is (to tell "in another room" from unknown)
    _id_count: dict[str, int] = field(default_factory=dict)
    _seq: int = 0

    def __post_init__(self) -> None:
        if self.max_size < 1:
            raise ValueError(f"a room must hold at least one member, not {self.max_size}")

    def join(
        self, conn: ConnId, room: str, member: str, text: bool, seq: int | None = None
    ) -> Membership | Refusal:
        """Add ``conn`` to ``room`` as ``member`` (name and ID already checked);
        ``seq``: its join order if the cluster gave one (else the next here)."""
        if conn in self._by_conn:
            joined = self._by_conn[conn]
            return Refusal(CONFLICT, f"this connection is already in room {joined.room}")
        members = self._rooms.get(room, {})
        if member in members:
            return Refusal(CONFLICT, f"member ID {clip(member)} is already taken in room {room}")
        if len(members) >= self.max_size:
            return Refusal(SERVICE_UNAVAILABLE, f"room {room} is full ({self.max_size} members)")
        self._rooms[room] = members
        members[member] = conn
        self._seq += 1
        joined = Membership(room, member, self._seq if seq is None else seq, text)
        self._by_conn[conn] = joined
        self._id_count[member] = self._id_count.get(member, 0) + 1
        return joined

    def leave(self, conn: ConnId) -> Membership | None:
        """Remove ``conn`` from its room (the room goes if it was the last); its
        membership, or None if it was in no room."""
        joined = self._by_conn.pop(conn, None)
        if joined is None:
            return None
        members = self._rooms[joined.room]
        del members[joined.member]
        if not members:
            del self._rooms[joined.room]
        count = self._id_count[joined.member] - 1
        if count:
            self._id_count[joined.member] = count
        else:
            del self._id_count[joined.member]
        return joined

    def membership(self, conn: ConnId) -> Membership | None:
        return self._by_conn.get(conn)

    def members(self, room: str) -> list[str]:
        """The members of ``room``, oldest first (empty: no such room)."""
        return list(self._rooms.get(room, ()))

    def connections(self, room: str) -> dict[str, ConnId]:
        """``room``'s members and their connections, oldest first (a copy)."""
        return dict(self._rooms.get(room, {}))

    def conn_of(self, room: str, member: str) -> ConnId | None:
        return self._rooms.get(room, {}).get(member)

    def elsewhere(self, member: str, room: str) -> bool:
        """Whether a member ``member`` is in some room other than ``room``."""
        count = self._id_count.get(member, 0)
        return count > (1 if member in self._rooms.get(room, ()) else 0)

    def rooms(self) -> list[str]:
        return sorted(self._rooms)

    def member_count(self) -> int:
        """How many members all rooms hold together."""
        return len(self._by_conn)

    def __len__(self) -> int:
        """How many rooms exist."""
        return len(self._rooms)
