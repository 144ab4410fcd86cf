"""The owner's side of a one-time code: register under a fresh code, serve
the one caller that proves it knows it, and exit.

The caller's side is :func:`peers.session.call` with ``code=``. How the code
authenticates the call: :mod:`peers.pake`; the code itself: :mod:`peers.codes`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from rtc_signal.peers.codes import Code, new_code
from rtc_signal.peers.errors import IdTaken
from rtc_signal.peers.session import AnswerPeer, CallHandler, PeerConfig

log = logging.getLogger(__name__)

#: fresh codes tried when their IDs are taken (each try widens the number range)
REGISTRATION_ATTEMPTS = 6


async def serve_code(
    config: PeerConfig,
    handler: CallHandler,
    on_code: Callable[[Code], None],
    code: Code | None = None,
) -> Code:
    """Register under a fresh one-time code (``on_code`` gets it once it is
    registered: tell the other person then), serve one authenticated call
    with ``handler`` and return the code, which is then used up.

    One attempt: a wrong code (or a man in the middle) ends this with
    CodeMismatch, and the ID is left at once, so the code is burnt. No
    reconnect either: the code's ID is never registered twice. ``code``
    fixes the code (tests); otherwise a taken ID is retried with another one.
    """
    attempts = 1 if code is not None else REGISTRATION_ATTEMPTS
    for attempt in range(attempts):
        current = code or new_code(attempt)

        def registered(_url: str, registered_code: Code = current) -> None:
            on_code(registered_code)

        peer = AnswerPeer(
            config, current.peer_id, on_registered=registered, reconnect=None, code=current
        )
        try:
            await peer.serve(handler, max_calls=1)
        except IdTaken:
            if attempt + 1 == attempts:
                raise
            log.info("code ID %r is taken; drawing another code", current.peer_id)
            continue
        return current
    raise AssertionError("unreachable")  # pragma: no cover
