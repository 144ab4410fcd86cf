"""The one error family raised for anything malformed on the wire.

Every decoding function of :mod:`proto` raises a subclass of
:class:`ProtocolError` and nothing else, whatever bytes it is given. Servers
turn it into a Response with :attr:`ProtocolError.code`; clients into a clear
message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rtc_signal.proto.commands import Command


class ProtocolError(ValueError):
    """Root of every decoding error: the input is not a valid frame.

    ``command`` is the frame's command when it could be read before the error
    was found, so that a server can answer in the matching response command.
    """

    code = 400

    def __init__(self, message: str, command: Command | None = None) -> None:
        super().__init__(message)
        self.command = command


class MalformedFrame(ProtocolError):
    """The frame is not a JSON object of the expected shape and types."""


class InvalidBase64(ProtocolError):
    """A ``payload`` or ``body`` is not standard, padded base64 (RFC 4648 §4)."""


class UnknownCommand(ProtocolError):
    """The ``command`` is an integer this protocol does not define."""


class InvalidPayload(ProtocolError):
    """The payload (Request/Response) or a body (SDP, candidate) is malformed."""
