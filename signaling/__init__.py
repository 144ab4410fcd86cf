"""rtc-signal's signaling server: a sans-I/O router and its websockets layer."""

from rtc_signal.signaling.router import Action, ConnId, Forward, Path, Router, Send

__all__ = ["Action", "ConnId", "Forward", "Path", "Router", "Send"]
