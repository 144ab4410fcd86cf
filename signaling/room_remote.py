"""What a node of a cluster knows of its rooms' members on other nodes (sans-I/O).

A room's members may be spread over the nodes (README "Running a cluster").
Redis holds the truth (:mod:`signaling.cluster`); each node keeps this view
of the members elsewhere of the rooms it has members in, kept current by the
Join's answer and the Presence events the other nodes publish, so that a
relay to a member elsewhere needs no Redis lookup:

- ``members``: room -> {member: (node, seq)}; ``seq`` is the cluster-wide
  join order (the later joiner of a pair offers, the members list is oldest
  first).
- ``calls``: which remote member offered to which local member (and from
  which node): only then may the local member Answer it, as on one node.

Bounded: a room holds at most ``--max-room-size`` members, and a local
member's remote calls are at most one per other member of its room.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class RemoteRooms:
    #: room -> {member on another node: (node, cluster-wide join seq)}
    members: dict[str, dict[str, tuple[str, int]]] = field(default_factory=dict)
    #: (room, local member) -> {remote member that offered to it: its node}
    calls: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)

    def add(self, room: str, member: str, node: str, seq: int) -> None:
        self.members.setdefault(room, {})[member] = (node, seq)

    def remove(self, room: str, member: str) -> bool:
        """``member`` of ``room`` left; whether it was known. Its calls end."""
        members = self.members.get(room)
        if members is None or members.pop(member, None) is None:
            return False
        for (call_room, _), callers in self.calls.items():
            if call_room == room:
                callers.pop(member, None)
        return True

    def where(self, room: str, member: str) -> tuple[str, int] | None:
        """(node, seq) of ``member`` of ``room`` if it is on another node."""
        return self.members.get(room, {}).get(member)

    def record_call(self, room: str, local: str, remote: str, node: str) -> None:
        self.calls.setdefault((room, local), {})[remote] = node

    def called(self, room: str, local: str, remote: str) -> bool:
        """Whether ``remote`` offered to ``local`` (both of ``room``)."""
        return remote in self.calls.get((room, local), {})

    def drop_local(self, room: str, local: str) -> None:
        """Local member ``local`` left ``room``: its calls end."""
        self.calls.pop((room, local), None)

    def drop_room(self, room: str) -> None:
        """This node has no member in ``room`` any more: forget it."""
        self.members.pop(room, None)
        for key in [k for k in self.calls if k[0] == room]:
            del self.calls[key]

    def member_count(self) -> int:
        return sum(len(m) for m in self.members.values())
