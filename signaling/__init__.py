"""rtc-signal's signaling server: a sans-I/O router and its websockets layer.

The router's names are imported on first use (PEP 562), not with the package:
``rtc-signal --help`` lives in this package and must not pay for the protocol.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rtc_signal.signaling.router import Action, ConnId, Forward, Path, Router, Send

__all__ = ["Action", "ConnId", "Forward", "Path", "Router", "Send"]


def __getattr__(name: str) -> object:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.router"), name)
