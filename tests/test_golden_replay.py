"""Replay the recorded Go demo session against our server, frame by frame.

The golden file (see ``docs/golden/README.md``) holds every frame of a real
session of the Go reference demo, recorded per WebSocket connection. We send
its client frames on the same paths, in the same order, and check that each
recorded server frame is matched on the same connection:

- replies (101-104): same command, and code zero vs non-zero alike (Go answers
  an unknown target with code 1, we with 404);
- forwarded requests: byte-identical to the frame the other peer sent;
- frame type: replies in the type the receiving client used, forwarded frames
  in the type their sender used.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection

from rtc_signal.proto import Command, decode
from tests.conftest import REPO, connect, recv_frame, run, running_server, start_server_process
from tests.conftest import stop_server_process as stop_proc


def _golden_path() -> Path | None:
    candidates = [
        os.environ.get("RTC_SIGNAL_GOLDEN", ""),
        str(REPO / "tests" / "golden" / "go-demo-session.jsonl"),
        str(REPO / "docs" / "golden" / "go-demo-session.jsonl"),
        str(REPO.parent / "shared" / "docs" / "golden" / "go-demo-session.jsonl"),
        "/work/shared/docs/golden/go-demo-session.jsonl",
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


GOLDEN = _golden_path()
pytestmark = pytest.mark.skipif(GOLDEN is None, reason="golden session file not found")


@dataclass(frozen=True)
class Record:
    path: str
    to_server: bool
    binary: bool
    frame: bytes


def load_golden() -> list[Record]:
    assert GOLDEN is not None
    records = []
    for line in GOLDEN.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        obj = json.loads(line)
        assert obj["dir"] in ("client->server", "server->client"), obj
        records.append(
            Record(
                path=obj["path"],
                to_server=obj["dir"] == "client->server",
                binary=obj["binary"],
                frame=obj["frame"].encode("utf-8"),
            )
        )
    return records


RECORDS = load_golden() if GOLDEN is not None else []
OTHER = {"/register": "/offer", "/offer": "/register"}


def test_golden_file_has_the_documented_shape() -> None:
    """The golden session holds a registration, an offer, answer, candidates and a 404-ish."""
    commands = [decode(r.frame).command for r in RECORDS]
    assert {r.path for r in RECORDS} == {"/register", "/offer"}
    for command in (Command.INIT, Command.OFFER, Command.ANSWER, Command.CANDIDATE):
        assert command in commands
    last = decode(RECORDS[-1].frame)
    assert last.command is Command.OFFER_RESPONSE and last.response.code != 0
    assert all(r.binary for r in RECORDS)


@pytest.mark.parametrize("index", range(len(RECORDS)))
def test_golden_frame_round_trips(index: int) -> None:
    """Every golden frame decodes with proto and re-encodes to the very same bytes."""
    frame = RECORDS[index].frame
    assert decode(frame).to_frame() == frame
    assert decode(frame.decode()).to_frame() == frame


async def _assert_silent(ws: ClientConnection, timeout: float = 0.2) -> None:
    try:
        extra = await asyncio.wait_for(ws.recv(), timeout)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected extra frame: {extra!r}")


async def replay(url: str, text_paths: Sequence[str] = ()) -> int:
    """Replay the golden session on ``url``; clients on ``text_paths`` use text frames.

    Returns the number of server frames checked.
    """
    current: dict[str, ClientConnection] = {}
    opened: list[ClientConnection] = []
    offer_source: str | None = None
    checked = 0

    async def open_conn(path: str) -> ClientConnection:
        ws = await connect(url, path)
        opened.append(ws)
        current[path] = ws
        return ws

    try:
        for i, rec in enumerate(RECORDS):
            envelope = decode(rec.frame)
            if rec.to_server:
                if rec.path == "/offer" and envelope.command.is_request:
                    # A new source on /offer is a new offer peer: a new connection
                    # (the golden file's last offer comes from a second offer peer).
                    source = envelope.request.source
                    if offer_source is not None and source != offer_source:
                        await open_conn("/offer")
                    offer_source = source
                ws = current.get(rec.path) or await open_conn(rec.path)
                await ws.send(rec.frame.decode() if rec.path in text_paths else rec.frame)
                continue
            ws = current[rec.path]
            got = await recv_frame(ws)
            where = f"golden line {i + 1} on {rec.path}"
            if envelope.command.is_request:
                # a forwarded frame: the other peer's frame, in its frame type
                sender_text = OTHER[rec.path] in text_paths
                assert isinstance(got, str if sender_text else bytes), where
                got_bytes = got.encode() if isinstance(got, str) else got
                assert got_bytes == rec.frame, f"{where}: forwarded frame differs"
            else:
                # a reply: in the frame type this client used
                own_text = rec.path in text_paths
                assert isinstance(got, str if own_text else bytes), where
                reply = decode(got)
                assert reply.command == envelope.command, f"{where}: {reply} != {envelope}"
                assert (reply.response.code == 0) == (envelope.response.code == 0), (
                    f"{where}: got {reply.response}, Go sent {envelope.response}"
                )
            checked += 1
        # nothing beyond what the Go server sent (e.g. no reply to responses)
        await asyncio.gather(*(_assert_silent(ws) for ws in opened))
    finally:
        await asyncio.gather(*(ws.close() for ws in opened), return_exceptions=True)
    return checked


EXPECTED_SERVER_FRAMES = sum(not r.to_server for r in RECORDS)


@pytest.mark.parametrize(
    "text_paths",
    [(), ("/register", "/offer"), ("/offer",), ("/register",)],
    ids=["binary", "text", "text-offer-binary-register", "binary-offer-text-register"],
)
def test_golden_replay_in_process(text_paths: tuple[str, ...]) -> None:
    """Our server answers the golden client frames as the Go server did (per frame type)."""

    async def main() -> int:
        async with running_server() as server:
            checked = await replay(server.url, text_paths)
            # every connection closed: the registry is empty again
            for _ in range(100):
                if not server.router.answer_peers() and not server.router.offer_peers():
                    break
                await asyncio.sleep(0.02)
            assert server.router.answer_peers() == []
            assert server.router.offer_peers() == []
            return checked

    assert run(main()) == EXPECTED_SERVER_FRAMES


def test_golden_replay_against_cli_process() -> None:
    """The real ``rtc-signal serve`` process replays the golden session like the Go server."""
    proc, url = start_server_process()
    try:
        assert run(replay(url)) == EXPECTED_SERVER_FRAMES
    finally:
        assert stop_proc(proc) == 0
