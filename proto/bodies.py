"""The bodies carried by Requests: SDP descriptions and ICE candidate lines.

- Offer (3) and Answer (2) carry ``{"type": "offer"|"answer", "sdp": "..."}``,
  the JSON of a pion/browser ``RTCSessionDescription``.
- Candidate (4) carries the bare candidate line as text
  (``candidate:1 1 udp 2130706431 10.0.0.5 50000 typ host``), implied
  ``sdpMid`` "0" and ``sdpMLineIndex`` 0. An empty body means end of candidates.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from rtc_signal.proto.commands import Command
from rtc_signal.proto.envelope import Text, validate_json
from rtc_signal.proto.errors import InvalidPayload
from rtc_signal.proto.wire import CANDIDATE_PREFIX, description_json

#: A candidate line has at least: foundation component transport priority
#: address port "typ" type.
_CANDIDATE_MIN_FIELDS = 8


class SessionDescription(BaseModel):
    """An SDP offer or answer, as pion and browsers serialise it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    type: Literal["offer", "answer", "pranswer", "rollback"]
    sdp: Text

    def to_json(self) -> bytes:
        return description_json(self.type, self.sdp)


def decode_description(
    body: bytes | None, command: Command, expected: Literal["offer", "answer"]
) -> SessionDescription:
    """Decode an Offer/Answer body and check it is the ``expected`` type."""
    if not body:
        raise InvalidPayload(f"{command.name.lower()} has no SDP body", command)
    description: SessionDescription = validate_json(SessionDescription, body, "SDP body", command)
    if description.type != expected:
        raise InvalidPayload(f"expected an SDP {expected}, got {description.type!r}", command)
    return description


def decode_candidate(body: bytes | None) -> str | None:
    """Decode a Candidate body into its ``candidate:`` line; None = end of candidates.

    Accepts the line with or without the ``a=`` prefix some stacks add, and
    checks its shape (it is parsed for real by the peer's ICE stack).
    """
    if not body:
        return None
    try:
        line = body.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise InvalidPayload("candidate is not UTF-8", Command.CANDIDATE) from None
    line = line.removeprefix("a=")
    if not line:
        return None
    if not line.startswith(CANDIDATE_PREFIX):
        raise InvalidPayload(
            f"candidate must start with {CANDIDATE_PREFIX!r}: {line[:80]!r}", Command.CANDIDATE
        )
    fields = line[len(CANDIDATE_PREFIX) :].split()
    if len(fields) < _CANDIDATE_MIN_FIELDS or fields[6] != "typ":
        raise InvalidPayload(f"malformed candidate line: {line[:120]!r}", Command.CANDIDATE)
    return line


def encode_candidate(line: str) -> bytes:
    """The body for a Candidate request: the bare ``candidate:`` line."""
    if not line.startswith(CANDIDATE_PREFIX):
        line = CANDIDATE_PREFIX + line
    return line.encode("utf-8")
