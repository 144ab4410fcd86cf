"""rtc-signal's peers: aiortc data-channel peers driven by the signaling server.

Library first: :func:`call` and :class:`AnswerPeer` are what ``rtc-peer``
uses; ``examples/`` shows them used directly.
"""

from rtc_signal.peers.channel import Channel
from rtc_signal.peers.errors import (
    ChannelClosed,
    ConnectTimeout,
    IdTaken,
    PeerError,
    Refused,
    SignalingError,
    UnknownTarget,
)
from rtc_signal.peers.ice import IceSettings, restrict_host_addresses
from rtc_signal.peers.session import AnswerPeer, Call, PeerConfig, call, new_offer_id

__all__ = [
    "AnswerPeer",
    "Call",
    "Channel",
    "ChannelClosed",
    "ConnectTimeout",
    "IceSettings",
    "IdTaken",
    "PeerConfig",
    "PeerError",
    "Refused",
    "SignalingError",
    "UnknownTarget",
    "call",
    "new_offer_id",
    "restrict_host_addresses",
]
