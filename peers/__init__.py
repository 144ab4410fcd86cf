"""rtc-signal's peers: aiortc data-channel peers driven by the signaling server.

Library first: :func:`call` and :class:`AnswerPeer` (1:1 calls) and
:func:`join` (rooms: a mesh of calls, see :mod:`peers.room`) are what
``rtc-peer`` uses; ``examples/`` shows them used directly.

The names below are imported on first use (PEP 562), not with the package:
``rtc-peer --help`` lives in this package and must not pay for aiortc.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rtc_signal.peers.channel import Channel
    from rtc_signal.peers.errors import (
        ChannelClosed,
        ConnectTimeout,
        IdTaken,
        PeerError,
        Refused,
        RoomFull,
        SignalingError,
        UnknownTarget,
    )
    from rtc_signal.peers.ice import IceSettings, restrict_host_addresses
    from rtc_signal.peers.room import (
        MemberConnected,
        MemberJoined,
        MemberLeft,
        Room,
        RoomEvent,
        RoomMessage,
        join,
    )
    from rtc_signal.peers.session import AnswerPeer, Call, PeerConfig, call, new_offer_id

#: exported name -> the module that defines it
_EXPORTS = {
    "Channel": "channel",
    "ChannelClosed": "errors",
    "ConnectTimeout": "errors",
    "IdTaken": "errors",
    "PeerError": "errors",
    "Refused": "errors",
    "RoomFull": "errors",
    "SignalingError": "errors",
    "UnknownTarget": "errors",
    "IceSettings": "ice",
    "restrict_host_addresses": "ice",
    "AnswerPeer": "session",
    "Call": "session",
    "PeerConfig": "session",
    "call": "session",
    "new_offer_id": "session",
    "MemberConnected": "room",
    "MemberJoined": "room",
    "MemberLeft": "room",
    "Room": "room",
    "RoomEvent": "room",
    "RoomMessage": "room",
    "join": "room",
}
__all__ = [
    "AnswerPeer",
    "Call",
    "Channel",
    "ChannelClosed",
    "ConnectTimeout",
    "IceSettings",
    "IdTaken",
    "MemberConnected",
    "MemberJoined",
    "MemberLeft",
    "PeerConfig",
    "PeerError",
    "Refused",
    "Room",
    "RoomEvent",
    "RoomFull",
    "RoomMessage",
    "SignalingError",
    "UnknownTarget",
    "call",
    "join",
    "new_offer_id",
    "restrict_host_addresses",
]


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
