"""The commands of the signaling envelopes (the Go demo's numbers).

Apart from :mod:`proto.envelope` and its pydantic models, so that the
server's routing path (:mod:`proto.routing`, :mod:`proto.wire`) never
imports pydantic: a relay reads and answers well-formed frames without it.
"""

from __future__ import annotations

import enum


class Command(enum.IntEnum):
    """What a Message carries. Requests are 1-7; responses are request + 100.

    1-4 are the Go demo's; 5-7 are rtc-signal's rooms (``/room`` only, see
    :mod:`proto.rooms` and docs/PROTOCOL.md), which Go peers never see.
    """

    INIT = 1
    ANSWER = 2
    OFFER = 3
    CANDIDATE = 4
    #: join a room: ``source`` = own member ID, ``target`` = room name
    JOIN = 5
    #: server -> member: who is in the room, who joined, who left
    PRESENCE = 6
    #: leave the room: ``source`` = own member ID, ``target`` = room name
    LEAVE = 7
    #: Extension: the response to a frame whose command could not be read
    #: (not JSON, unknown command). Go peers ignore commands they don't know.
    ERROR = 100
    INIT_RESPONSE = 101
    ANSWER_RESPONSE = 102
    OFFER_RESPONSE = 103
    CANDIDATE_RESPONSE = 104
    JOIN_RESPONSE = 105
    PRESENCE_RESPONSE = 106
    LEAVE_RESPONSE = 107

    @property
    def is_request(self) -> bool:
        return self < 100

    @property
    def response(self) -> Command:
        """The response command answering this request (``ERROR`` for responses)."""
        return Command(self + 100) if self.is_request else Command.ERROR
