"""Defaults shared by the library and ``rtc-peer``.

In a module of their own that imports nothing, because the command line's
options show them: ``rtc-peer --help`` must not import aiortc or websockets.
"""

#: where ``rtc-signal serve`` listens by default
DEFAULT_SIGNAL_URL = "ws://127.0.0.1:18080"
