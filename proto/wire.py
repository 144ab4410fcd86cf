"""Frames in the Go demo's exact bytes, built without pydantic.

The encoders behind :meth:`proto.envelope.Request.to_json` and friends, kept
apart so that the server answers (``response_frame``) and forwards without
importing pydantic. Field order and escaping are Go's (:mod:`proto.gojson`).
The values are not validated here: callers pass what they built themselves
or what :func:`proto.peek_request` / the models already checked.
"""

from __future__ import annotations

from rtc_signal.proto.gojson import b64encode, go_string

#: what a Candidate (4) body starts with: the bare ``candidate:`` line
CANDIDATE_PREFIX = "candidate:"


def description_json(kind: str, sdp: str) -> bytes:
    """An Offer/Answer body: ``{"type":..,"sdp":..}`` (RTCSessionDescription)."""
    return f'{{"type":{go_string(kind)},"sdp":{go_string(sdp)}}}'.encode()


def request_json(source: str, target: str, body: bytes | None) -> bytes:
    """A Request payload: ``{"source":..,"target":..,"body":base64|null}``."""
    encoded = "null" if body is None else f'"{b64encode(body)}"'
    return (
        f'{{"source":{go_string(source)},"target":{go_string(target)},"body":{encoded}}}'.encode()
    )


def response_json(code: int, msg: str) -> bytes:
    """A Response payload: ``{"code":..,"msg":..}``."""
    return f'{{"code":{code},"msg":{go_string(msg)}}}'.encode()


def message_frame(command: int, payload: bytes) -> bytes:
    """The outer frame: ``{"command":..,"payload":base64}``."""
    return f'{{"command":{int(command)},"payload":"{b64encode(payload)}"}}'.encode()


def response_frame(command: int, code: int, msg: str) -> bytes:
    """A whole Response frame, as :func:`proto.encode_response` writes it."""
    return message_frame(command, response_json(code, msg))


def request_frame(command: int, source: str, target: str, body: bytes | None = None) -> bytes:
    """A whole Request frame, as :func:`proto.encode_request` writes it."""
    return message_frame(command, request_json(source, target, body))
