"""Shared helpers for tests that drive the real signaling server.

Everything here talks to real sockets on loopback only:

- :func:`run` drives a coroutine from a sync test (no pytest-asyncio), with a
  hard timeout so that no test can hang.
- :func:`running_server` starts an in-process :class:`SignalingServer` on
  ``127.0.0.1:0`` (``async with running_server(max_frame=1024) as server``).
- :func:`connect`, :func:`recv_frame`, :func:`recv_envelope`,
  :func:`register`, :func:`expect_response`: thin helpers over websockets
  clients that always wait with a timeout.
- :func:`start_server_process` / :func:`stop_server_process` and the
  ``signal_server_proc`` fixture run the real ``rtc-signal serve`` command as
  a subprocess and read the ``listening on ws://...`` line it prints first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

from rtc_signal.proto import Command, Envelope, Request, Response, decode, encode_request
from rtc_signal.signaling.server import ServerConfig, SignalingServer
from tests.redisserver import redis_server  # noqa: F401 (the cluster tests' fixture)

T = TypeVar("T")

#: Default bound for any single wait in these tests (seconds).
WAIT = 5.0
#: Bound for a whole ``run(...)`` call unless a test says otherwise.
RUN_TIMEOUT = 30.0
#: How long a subprocess may take to print its "listening on" line.
STARTUP_TIMEOUT = 15.0

REPO = Path(__file__).resolve().parent.parent
_LISTENING = re.compile(r"^listening on (wss?://\S+)$")

# Test modules import these helpers with ``from tests.conftest import ...``.
# Make that name resolve to this very module (not a second copy), however
# pytest imported it (``conftest`` when tests/ is not a package).
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
sys.modules.setdefault("tests.conftest", sys.modules[__name__])


# -- asyncio -------------------------------------------------------------------


def run(coro: Coroutine[Any, Any, T], timeout: float = RUN_TIMEOUT, loop: str = "asyncio") -> T:
    """Run ``coro`` in a fresh event loop; fail if it takes longer than ``timeout``.

    ``loop``: ``"asyncio"``, or ``"uvloop"``, what ``serve`` runs by default
    (its transports and sockets are not asyncio's)."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    if loop == "uvloop":
        import uvloop

        return uvloop.run(bounded())
    assert loop == "asyncio", loop
    return asyncio.run(bounded())


async def within(awaitable: Awaitable[T], timeout: float = WAIT) -> T:
    """Await ``awaitable`` but give up with TimeoutError after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        return await awaitable


async def eventually(predicate: Any, timeout: float = WAIT, interval: float = 0.02) -> None:
    """Poll ``predicate()`` until it is true; fail with AssertionError at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"condition still false after {timeout} s")
        await asyncio.sleep(interval)


# -- in-process server -----------------------------------------------------------


@contextlib.asynccontextmanager
async def running_server(**config: Any) -> AsyncIterator[SignalingServer]:
    """A real SignalingServer on 127.0.0.1 and a free port; closed on exit.

    Keyword arguments override :class:`ServerConfig` fields. Keepalive is off
    by default here (tests that need it turn it on).
    """
    config.setdefault("host", "127.0.0.1")
    config.setdefault("port", 0)
    config.setdefault("ping_interval", None)
    config.setdefault("ping_timeout", None)
    server = SignalingServer(ServerConfig(**config))
    await within(server.start())
    try:
        yield server
    finally:
        await within(server.close(), 10)


# -- clients ---------------------------------------------------------------------


async def connect(url: str, path: str, **kwargs: Any) -> ClientConnection:
    """Open a websockets client on ``url + path`` (no keepalive, no compression)."""
    kwargs.setdefault("ping_interval", None)
    kwargs.setdefault("compression", None)
    kwargs.setdefault("open_timeout", WAIT)
    kwargs.setdefault("close_timeout", 1)
    return await ws_connect(url + path, **kwargs)


@contextlib.asynccontextmanager
async def client(url: str, path: str, **kwargs: Any) -> AsyncIterator[ClientConnection]:
    """``async with client(url, "/register") as ws``: closed (bounded) on exit."""
    ws = await connect(url, path, **kwargs)
    try:
        yield ws
    finally:
        with contextlib.suppress(Exception):
            await within(ws.close(), WAIT)


async def recv_frame(ws: ClientConnection, timeout: float = WAIT) -> bytes | str:
    """The next frame, as received (bytes for binary, str for text)."""
    return await within(ws.recv(), timeout)


async def recv_envelope(
    ws: ClientConnection, timeout: float = WAIT, binary: bool | None = True
) -> Envelope:
    """The next frame decoded; checks its frame type when ``binary`` is not None."""
    frame = await recv_frame(ws, timeout)
    if binary is not None:
        kind = "binary" if binary else "text"
        assert isinstance(frame, bytes if binary else str), f"expected a {kind} frame: {frame!r}"
    return decode(frame)


async def expect_response(
    ws: ClientConnection,
    command: Command | None,
    code: int | None = 0,
    *,
    binary: bool | None = True,
    timeout: float = WAIT,
) -> Response:
    """Receive one response; check its command (if given) and code (if given)."""
    envelope = await recv_envelope(ws, timeout, binary)
    assert not envelope.command.is_request, f"expected a response, got {envelope}"
    response = envelope.response
    if command is not None:
        assert envelope.command == command, f"expected {command!r}, got {envelope}"
    if code is not None:
        assert response.code == code, f"expected code {code}, got {response}"
    return response


async def register(ws: ClientConnection, peer_id: str, *, text: bool = False) -> Response:
    """Register ``peer_id`` on a ``/register`` connection; returns the (checked) 101."""
    frame = encode_request(Command.INIT, peer_id, "")
    await ws.send(frame.decode() if text else frame)
    return await expect_response(ws, Command.INIT_RESPONSE, 0, binary=not text)


def offer_frame(source: str, target: str, sdp: str = "v=0\r\n") -> bytes:
    body = json.dumps({"type": "offer", "sdp": sdp}, separators=(",", ":")).encode()
    return encode_request(Command.OFFER, source, target, body)


def answer_frame(source: str, target: str, sdp: str = "v=0\r\n") -> bytes:
    body = json.dumps({"type": "answer", "sdp": sdp}, separators=(",", ":")).encode()
    return encode_request(Command.ANSWER, source, target, body)


def candidate_frame(source: str, target: str, port: int = 50000) -> bytes:
    line = f"candidate:1 1 udp 2130706431 127.0.0.1 {port} typ host"
    return encode_request(Command.CANDIDATE, source, target, line.encode())


async def offer(
    ws: ClientConnection, source: str, target: str, *, expect_code: int | None = 0
) -> Response:
    """Send an offer on an ``/offer`` connection and return the (checked) 103."""
    await ws.send(offer_frame(source, target))
    return await expect_response(ws, Command.OFFER_RESPONSE, expect_code)


async def relay_offer(
    offerer: ClientConnection,
    receiver: ClientConnection,
    source: str,
    target: str,
    sdp: str = "v=0\r\n",
) -> None:
    """Send an offer; it must be acked with code 0 and reach ``receiver`` byte for byte."""
    sent = offer_frame(source, target, sdp)
    await offerer.send(sent)
    await expect_response(offerer, Command.OFFER_RESPONSE, 0)
    assert await recv_frame(receiver) == sent


def request_of(frame: bytes | str) -> Request:
    return decode(frame).request


# -- subprocess server -------------------------------------------------------------


def server_command(*args: str) -> list[str]:
    """The argv that runs the installed ``rtc-signal`` with ``args``.

    Prefers the console script next to the running interpreter (what a user
    runs); falls back to importing the click entry point with this Python.
    """
    script = Path(sys.executable).with_name("rtc-signal")
    if script.exists():
        return [str(script), *args]
    found = shutil.which("rtc-signal")
    if found is not None:
        return [found, *args]
    return [sys.executable, "-c", "from rtc_signal.signaling.cli import main; main()", *args]


_stderr_files: dict[int, IO[str]] = {}


def _read_first_line(stream: IO[str], timeout: float) -> str | None:
    """``stream.readline()`` with a timeout (None if nothing came in time)."""
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return box[0] if box else None


def start_server_process(
    *extra_args: str,
    timeout: float = STARTUP_TIMEOUT,
    program: str | os.PathLike[str] | None = None,
    cwd: str | os.PathLike[str] = REPO,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[str], str]:
    """Start ``rtc-signal serve --port 0 [extra_args]``; return (process, ws URL).

    The URL is read from the first stdout line (``listening on ws://...``).
    ``extra_args`` come last, so they can override ``--port``/``--host``.
    ``program`` is the ``rtc-signal`` executable to run (default:
    :func:`server_command`), ``cwd`` and ``env`` are those of the process
    (default: the checkout, our environment). Stop it with
    :func:`stop_server_process` (or ``proc.terminate()`` + ``wait``).
    """
    args = ("serve", "--host", "127.0.0.1", "--port", "0", *extra_args)
    stderr = tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")  # noqa: SIM115
    proc = subprocess.Popen(
        server_command(*args) if program is None else [os.fspath(program), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        cwd=cwd,
        env=env,
    )
    assert proc.stdout is not None
    line = _read_first_line(proc.stdout, timeout)
    match = _LISTENING.match(line.strip()) if line else None
    if match is None:
        _kill(proc)
        stderr.seek(0)
        log = stderr.read()[-2000:]
        stderr.close()
        raise RuntimeError(
            f"rtc-signal serve did not report its URL within {timeout} s "
            f"(first stdout line {line!r}, exit code {proc.returncode}); stderr:\n{log}"
        )
    _stderr_files[proc.pid] = stderr
    return proc, match.group(1)


def server_stderr(proc: subprocess.Popen[str]) -> str:
    """What a process started by :func:`start_server_process` wrote on stderr so far."""
    stream = _stderr_files.get(proc.pid)
    if stream is None:
        return ""
    stream.flush()
    stream.seek(0)
    return stream.read()


def _kill(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(WAIT)


def stop_server_process(
    proc: subprocess.Popen[str], sig: int = signal.SIGTERM, timeout: float = WAIT
) -> int:
    """Send ``sig``, wait up to ``timeout`` s (then SIGKILL); return the exit code."""
    try:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _kill(proc)
        return proc.returncode
    finally:
        if proc.stdout is not None:
            proc.stdout.close()
        stream = _stderr_files.pop(proc.pid, None)
        if stream is not None:
            stream.close()


@pytest.fixture
def signal_server_proc() -> Iterator[str]:
    """A ``rtc-signal serve`` subprocess on a free loopback port; yields its ws URL."""
    proc, url = start_server_process()
    try:
        yield url
    finally:
        stop_server_process(proc)


#: ``factory(*extra_args) -> (Popen, url)``, as given by ``server_process_factory``
ServerFactory = Callable[..., tuple[subprocess.Popen[str], str]]


@pytest.fixture
def server_process_factory() -> Iterator[ServerFactory]:
    """``factory(*extra_args) -> (Popen, url)``; every process is stopped at teardown."""
    procs: list[subprocess.Popen[str]] = []

    def factory(*extra_args: str) -> tuple[subprocess.Popen[str], str]:
        proc, url = start_server_process(*extra_args)
        procs.append(proc)
        return proc, url

    try:
        yield factory
    finally:
        for proc in procs:
            stop_server_process(proc)


def subprocess_env() -> dict[str, str]:
    """The environment for CLI subprocesses (inherits ours; no colour, fixed width)."""
    env = dict(os.environ)
    env.setdefault("COLUMNS", "100")
    env.pop("FORCE_COLOR", None)
    return env


@pytest.fixture
def without_fix() -> Iterator[None]:
    """peers/fixes.py's workarounds removed for the test (to show the upstream
    bugs they work around), applied again after it."""
    from rtc_signal.peers import fixes  # (imports aiortc: only where it is used)

    fixes.remove()
    try:
        yield
    finally:
        fixes.apply()
