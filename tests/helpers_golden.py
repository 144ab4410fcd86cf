"""Shared test helpers: the golden Go-demo session and small frame builders.

The golden file (``tests/golden/go-demo-session.jsonl``, a copy of
``docs/golden/go-demo-session.jsonl`` in the shared docs) is a real signaling
session of the Go reference demo recorded frame by frame at a WebSocket proxy.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

GOLDEN_NAME = "go-demo-session.jsonl"
_CANDIDATES = (
    Path(__file__).parent / "golden" / GOLDEN_NAME,
    Path(__file__).parent.parent / "docs" / "golden" / GOLDEN_NAME,
    Path("/work/shared/docs/golden") / GOLDEN_NAME,
)

CLIENT_TO_SERVER = "client->server"
SERVER_TO_CLIENT = "server->client"


@dataclass(frozen=True)
class GoldenFrame:
    """One recorded WebSocket frame of the Go demo session."""

    index: int
    path: str  # "/register" or "/offer"
    dir: str  # "client->server" or "server->client"
    binary: bool
    frame: bytes  # the frame, byte for byte

    @property
    def from_client(self) -> bool:
        return self.dir == CLIENT_TO_SERVER

    @property
    def command(self) -> int:
        value = json.loads(self.frame)["command"]
        assert type(value) is int
        return value

    @property
    def payload(self) -> bytes:
        """The base64-decoded payload (the inner Request/Response JSON)."""
        return base64.b64decode(json.loads(self.frame)["payload"], validate=True)

    @property
    def payload_json(self) -> dict[str, Any]:
        obj = json.loads(self.payload)
        assert isinstance(obj, dict)
        return obj

    @property
    def id(self) -> str:
        """A readable pytest id, e.g. ``07-/register-c2s-cmd2``."""
        way = "c2s" if self.from_client else "s2c"
        return f"{self.index:02d}-{self.path}-{way}-cmd{self.command}"


def golden_path() -> Path:
    """Where the golden jsonl lives (``RTC_SIGNAL_GOLDEN`` overrides)."""
    override = os.environ.get("RTC_SIGNAL_GOLDEN")
    if override:
        return Path(override)
    for candidate in _CANDIDATES:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{GOLDEN_NAME} not found in {[str(c) for c in _CANDIDATES]}")


@cache
def load_golden() -> tuple[GoldenFrame, ...]:
    """Every frame of the golden session, in recording order."""
    frames = []
    with golden_path().open(encoding="utf-8") as fh:
        for index, line in enumerate(fh):
            if not line.strip():
                continue
            rec = json.loads(line)
            frames.append(
                GoldenFrame(
                    index=index,
                    path=rec["path"],
                    dir=rec["dir"],
                    binary=bool(rec["binary"]),
                    frame=rec["frame"].encode("utf-8"),
                )
            )
    assert frames, "empty golden file"
    return tuple(frames)


def golden_frames() -> list[bytes]:
    """The distinct golden frames (bytes), in first-seen order."""
    return list(dict.fromkeys(g.frame for g in load_golden()))


def golden_bodies(command: int) -> list[bytes]:
    """The distinct decoded ``body`` bytes of golden requests with ``command``."""
    out: dict[bytes, None] = {}
    for g in load_golden():
        if g.command == command:
            body = g.payload_json.get("body")
            if body is not None:
                out[base64.b64decode(body, validate=True)] = None
    return list(out)


def raw_frame(command: object, payload: object) -> bytes:
    """A frame with arbitrary JSON values (for malformed-input tests)."""
    return json.dumps({"command": command, "payload": payload}, separators=(",", ":")).encode()


def b64(data: bytes) -> str:
    """Standard padded base64 computed independently of :mod:`proto`."""
    return base64.b64encode(data).decode("ascii")


def frame_with_payload_json(command: object, payload_obj: object) -> bytes:
    """A frame whose payload is the base64 of ``json.dumps(payload_obj)``."""
    inner = json.dumps(payload_obj, separators=(",", ":")).encode()
    return raw_frame(command, b64(inner))
