"""Control commands: typed JSON on the data channel labelled ``control``.

A viewer (``rtc-peer offer --control``, the browser page) sends requests to
the camera peer and gets one reply per request, matched by ``id``::

    -> {"cmd": "ping", "id": 1, "t": 1712.5}
    <- {"id": 1, "ok": true, "cmd": "ping", "result": {"t": 1712.5}}
    -> {"cmd": "pause", "id": 2}
    <- {"id": 2, "ok": true, "cmd": "pause", "result": {"paused": true}}
    -> {"cmd": "reboot", "id": 3}
    <- {"id": 3, "ok": false, "error": "unknown command 'reboot' (...)"}

Commands: ``ping`` (``t``: the sender's clock in ms, echoed, for the RTT),
``stats`` (this viewer's and the total figures), ``keyframe`` (ask the
source for an IDR: ``{"requested": bool}``), ``pause``/``resume`` (stop or
resume this viewer's video: ``{"paused": bool}``). Unknown fields are
ignored. Anything malformed gets an ``ok: false`` reply with the request's
``id`` when it has a usable one, else ``null``, and the channel goes on.

Limits, checked before the JSON parser runs: a request is at most
:data:`MAX_REQUEST` bytes of UTF-8 text and nests arrays/objects at most
:data:`MAX_DEPTH` deep (a cheap scan, so that ``[[[[...`` cannot exhaust the
parser's recursion); ``NaN``/``Infinity`` are not JSON and are refused too.

Pure and synchronous, like the rest of :mod:`proto`.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationError

from rtc_signal.proto.gojson import reject_json_constant

CONTROL_LABEL = "control"
COMMANDS = ("ping", "stats", "keyframe", "pause", "resume")
#: requests larger than this (UTF-8 bytes) are refused unread (a control message is tiny)
MAX_REQUEST = 4096
#: deepest nesting of arrays/objects a request may have (real ones have 1)
MAX_DEPTH = 32


class _Request(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    id: StrictInt


class Ping(_Request):
    cmd: Literal["ping"]
    t: StrictInt | StrictFloat


class Stats(_Request):
    cmd: Literal["stats"]


class Keyframe(_Request):
    cmd: Literal["keyframe"]


class Pause(_Request):
    cmd: Literal["pause"]


class Resume(_Request):
    cmd: Literal["resume"]


ControlRequest = Annotated[Ping | Stats | Keyframe | Pause | Resume, Field(discriminator="cmd")]


class _Envelope(BaseModel):
    request: ControlRequest


class ControlError(Exception):
    """A request that cannot be served; ``id`` is echoed in the reply."""

    def __init__(self, message: str, request_id: int | None) -> None:
        super().__init__(message)
        self.request_id = request_id


def parse_request(message: str | bytes) -> Ping | Stats | Keyframe | Pause | Resume:
    """Validate one control message; ControlError with a clear message if bad."""
    if isinstance(message, bytes):
        raise ControlError("control messages are JSON text, not binary", None)
    # Every character is at least one UTF-8 byte: a long string is refused
    # before it is even encoded.
    if len(message) > MAX_REQUEST:
        raise ControlError(f"control message too long (over {MAX_REQUEST} bytes)", None)
    try:
        size = len(message.encode("utf-8"))
    except UnicodeEncodeError:  # lone surrogates: what undecodable bytes become
        raise ControlError("control messages must be valid UTF-8 text", None) from None
    if size > MAX_REQUEST:
        raise ControlError(f"control message too long ({size} > {MAX_REQUEST} bytes)", None)
    depth = _nesting_depth(message, MAX_DEPTH)
    if depth > MAX_DEPTH:
        raise ControlError(f"control message nested deeper than {MAX_DEPTH} levels", None)
    try:
        raw = json.loads(message, parse_constant=reject_json_constant)
    except (ValueError, RecursionError) as exc:  # RecursionError: belt and braces
        raise ControlError(f"not JSON: {exc}", None) from None
    if not isinstance(raw, dict):
        raise ControlError("a control request is a JSON object", None)
    request_id = raw.get("id")
    if not isinstance(request_id, int) or isinstance(request_id, bool):
        raise ControlError('"id" must be an integer', None)
    cmd = raw.get("cmd")
    if cmd not in COMMANDS:
        known = ", ".join(COMMANDS)
        what = f"unknown command {cmd!r}" if isinstance(cmd, str) else '"cmd" must be a string'
        raise ControlError(f"{what} (known: {known})", request_id)
    try:
        return _Envelope.model_validate({"request": raw}).request
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][2:]) or cmd}: {e['msg']}" for e in exc.errors()
        )
        raise ControlError(f"bad {cmd!r} request: {problems}", request_id) from None


def _nesting_depth(text: str, limit: int) -> int:
    """How deep ``[``/``{`` nest in ``text`` outside JSON strings, counted up to
    ``limit + 1`` (the scan stops there). Malformed text gets some number: the
    parser reports what is wrong with it."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        elif char in "]}":
            depth -= 1
    return deepest


def ok_reply(request_id: int, cmd: str, result: dict[str, Any]) -> str:
    return json.dumps({"id": request_id, "ok": True, "cmd": cmd, "result": result})


def error_reply(request_id: int | None, message: str) -> str:
    return json.dumps({"id": request_id, "ok": False, "error": message})


def request(cmd: str, request_id: int, **fields: Any) -> str:
    """A request as the viewer side sends it."""
    return json.dumps({"cmd": cmd, "id": request_id, **fields})
