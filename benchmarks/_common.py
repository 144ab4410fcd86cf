"""Shared helpers for the benchmark scripts (not a test module, not public API).

- the workload: the real Offer frame of the Go demo (golden session, line 3);
- a lean WebSocket client (an :class:`asyncio.Protocol` that writes pre-masked
  frames and only parses frame headers), so that the load generator costs far
  less CPU than the servers it measures;
- starting, watching and stopping the servers under test (``rtc-signal
  serve``, the naive relay, the PeerJS server), all on loopback;
- /proc readers (RSS, CPU time) and the median/table helpers.

The benchmark scripts import this file as ``_common`` (they are run as
``python benchmarks/<name>.py``, which puts this folder on ``sys.path``).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import base64
import collections
import contextlib
import functools
import importlib.metadata
import json
import os
import resource
import select
import selectors
import shlex
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar, cast

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CACHE = HERE / ".cache"
PEERJS_DIR = CACHE / "peerjs"
#: a copy of the shared docs' golden session, kept in the repository
GOLDEN = REPO / "tests" / "golden" / "go-demo-session.jsonl"
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# -- the workload ---------------------------------------------------------------


def golden_frames() -> list[dict[str, Any]]:
    path = Path(os.environ.get("RTC_SIGNAL_GOLDEN", GOLDEN))
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def golden_offer_frame() -> bytes:
    """The 3rd golden frame: a real Offer (command 3) sent by a Go offer peer."""
    frame = golden_frames()[2]
    assert frame["path"] == "/offer" and frame["dir"] == "client->server", frame
    return str(frame["frame"]).encode()


def golden_offer_body() -> bytes:
    """The Offer's body: the JSON ``{"type":"offer","sdp":"..."}`` of the Go peer."""
    outer = json.loads(golden_offer_frame())
    assert outer["command"] == 3
    request = json.loads(base64.b64decode(outer["payload"]))
    return base64.b64decode(request["body"])


def golden_sdp() -> str:
    return str(json.loads(golden_offer_body())["sdp"])


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def rtc_request(command: int, source: str, target: str, body: bytes | None) -> bytes:
    """A request frame exactly as the Go demo encodes it (and ``proto`` does)."""
    body_json = "null" if body is None else json.dumps(b64(body))
    payload = (
        f'{{"source":{json.dumps(source)},"target":{json.dumps(target)},"body":{body_json}}}'
    ).encode()
    return f'{{"command":{command},"payload":"{b64(payload)}"}}'.encode()


def rtc_response(command: int, code: int, msg: str) -> bytes:
    payload = f'{{"code":{code},"msg":{json.dumps(msg)}}}'.encode()
    return f'{{"command":{command},"payload":"{b64(payload)}"}}'.encode()


# -- a lean WebSocket client ------------------------------------------------------

OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 1, 2, 8, 9, 10
_MASK = b"\x5a\x3c\x96\xe1"


def client_frame(payload: bytes, opcode: int = OP_BINARY, mask: bytes = _MASK) -> bytes:
    """A complete masked client frame. The benchmark reuses it: the same mask key
    on every copy is allowed by servers (they only unmask), and it makes sending
    a frame a plain ``transport.write``."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    key = (mask * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return head + mask + masked


class LeanWs(asyncio.Protocol):
    """A minimal WebSocket client: handshake, pre-built frames out, headers in.

    Subclasses override :meth:`on_frame` (called for every data frame with the
    receive buffer and the payload's bounds, no copy) and :meth:`after_batch`
    (called once per ``data_received``). Pings are answered; a close frame
    closes the transport. Until :meth:`stop_capturing`, data frames are queued
    instead, for :meth:`next_frame` (replies such as 101 or OPEN).
    """

    def __init__(self, host: str, port: int, resource: str) -> None:
        loop = asyncio.get_running_loop()
        self._request = (
            f"GET {resource} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {b64(os.urandom(16))}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self.opened: asyncio.Future[None] = loop.create_future()
        #: until :meth:`stop_capturing`, data frames are queued for :meth:`next_frame`
        self.capturing = True
        self.inbox: collections.deque[bytes] = collections.deque()
        self.waiter: asyncio.Future[None] | None = None
        self.lost: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self._open = False
        #: pings received (and answered)
        self.pings = 0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports are not asyncio.Transport subclasses: no isinstance)
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        for fut in (self.opened, self.waiter, self.lost):
            if fut is not None and not fut.done():
                if fut is self.lost:
                    fut.set_result(None)
                else:
                    fut.set_exception(ConnectionError(f"connection lost: {exc}"))

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self._open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buf[: buf.find(b"\r\n")])
            if b" 101 " not in status:
                if not self.opened.done():
                    self.opened.set_exception(ConnectionError(f"handshake failed: {status!r}"))
                return
            del buf[: end + 4]
            self._open = True
            self.opened.set_result(None)
        self._parse()

    def _parse(self) -> None:
        buf = self.buf
        n = len(buf)
        pos = 0
        while n - pos >= 2:
            b1 = buf[pos + 1] & 0x7F
            if b1 < 126:
                start = pos + 2
                length = b1
            elif b1 == 126:
                if n - pos < 4:
                    break
                start = pos + 4
                (length,) = struct.unpack_from("!H", buf, pos + 2)
            else:
                if n - pos < 10:
                    break
                start = pos + 10
                (length,) = struct.unpack_from("!Q", buf, pos + 2)
            end = start + length
            if end > n:
                break
            opcode = buf[pos] & 0x0F
            if opcode == OP_BINARY or opcode == OP_TEXT:  # noqa: SIM109 (hot path: no tuple)
                if self.capturing:
                    self.inbox.append(bytes(buf[start:end]))
                    waiter = self.waiter
                    if waiter is not None and not waiter.done():
                        waiter.set_result(None)
                else:
                    self.on_frame(buf, start, end)
            elif opcode == OP_PING:
                self.pings += 1
                self.write(client_frame(bytes(buf[start:end]), OP_PONG))
                self.on_ping()
            elif opcode == OP_CLOSE:
                assert self.transport is not None
                self.transport.close()
                break
            pos = end
        if pos:
            del buf[:pos]
        self.after_batch()

    # for subclasses
    def on_frame(self, buf: bytearray, start: int, end: int) -> None:
        """A data frame arrived (payload is ``buf[start:end]``)."""

    def after_batch(self) -> None:
        """Every frame of one ``data_received`` call was handled."""

    def on_ping(self) -> None:
        """A ping arrived (and was answered)."""

    # helpers
    def write(self, data: bytes) -> None:
        assert self.transport is not None
        if not self.transport.is_closing():
            self.transport.write(data)

    async def request(self, frame: bytes, timeout: float = 10.0) -> bytes:
        """Send a (masked) frame and return the payload of the next data frame."""
        self.write(frame)
        return await self.next_frame(timeout)

    async def next_frame(self, timeout: float = 10.0) -> bytes:
        """The payload of the next data frame (while capturing)."""
        while not self.inbox:
            self.waiter = asyncio.get_running_loop().create_future()
            await asyncio.wait_for(self.waiter, timeout)
        return self.inbox.popleft()

    def stop_capturing(self) -> None:
        """From now on, data frames go to :meth:`on_frame`."""
        assert not self.inbox, f"unread frames: {list(self.inbox)[:3]!r}"
        self.capturing = False

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(struct.pack("!H", 1000), OP_CLOSE))
            self.transport.close()


P = TypeVar("P", bound=LeanWs)


async def connect(factory: Callable[[], P], host: str, port: int, timeout: float = 10.0) -> P:
    loop = asyncio.get_running_loop()
    _, proto = await asyncio.wait_for(loop.create_connection(factory, host, port), timeout)
    await asyncio.wait_for(proto.opened, timeout)
    return proto


# -- processes ------------------------------------------------------------------


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


async def settle_rss(pid: int, timeout: float, step: float = 0.25, still_kib: int = 64) -> int:
    """Wait until ``pid``'s RSS moves less than ``still_kib`` in ``step`` s
    (or ``timeout``); return it in KiB."""
    deadline = time.monotonic() + timeout
    last = rss_kib(pid)
    while time.monotonic() < deadline:
        await asyncio.sleep(step)
        now = rss_kib(pid)
        if abs(now - last) < still_kib:
            return now
        last = now
    return last


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its live children (from
    /proc: ``--workers`` serves from child processes)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    total = (int(fields[11]) + int(fields[12])) / CLK_TCK
    for child in _children(pid):
        with contextlib.suppress(OSError):
            total += cpu_seconds(child)
    return total


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def machine_busy() -> float:
    """CPU seconds the whole machine spent busy since boot (all cores, /proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLK_TCK


@dataclass
class ServerProc:
    name: str
    proc: subprocess.Popen[bytes]
    url: str
    stderr_path: str
    info: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1].split("/")[0])

    def stderr_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(Path(self.stderr_path).read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        with contextlib.suppress(OSError):
            os.unlink(self.stderr_path)


def _start(
    name: str,
    argv: Sequence[str],
    cwd: Path | None = None,
    timeout: float = 20.0,
    env: dict[str, str] | None = None,
) -> ServerProc:
    """Start a server that prints ``listening on ws://HOST:PORT`` on stdout."""
    fd, err_path = tempfile.mkstemp(prefix=f"bench-{name}-", suffix=".log")
    proc = subprocess.Popen(
        list(argv),
        stdout=subprocess.PIPE,
        stderr=fd,
        stdin=subprocess.DEVNULL,
        cwd=cwd,
        env=env,
        preexec_fn=raise_fd_limit,  # the children need many fds too
    )
    os.close(fd)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    os.set_blocking(proc.stdout.fileno(), False)
    data = b""
    while time.monotonic() < deadline:
        chunk = proc.stdout.read()
        if chunk:
            data += chunk
            for line in data.decode(errors="replace").splitlines():
                if line.startswith("listening on "):
                    return ServerProc(
                        name, proc, line.removeprefix("listening on ").strip(), err_path
                    )
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    tail = Path(err_path).read_text(errors="replace")[-2000:]
    raise RuntimeError(f"{name} did not start (stdout {data!r}):\n{tail}")


#: ``rtc-signal serve`` options of the benchmarks: the per-connection rate limit
#: (default 100 messages/s) would throttle a load generator that measures
#: capacity, so it is set out of reach: its check still runs on every message
#: (its cost is in the figures) but never refuses one.
RTC_SIGNAL_BENCH_ARGS = ("--rate-limit", "1000000000", "--rate-burst", "1000000000")


def rtc_signal_argv(*extra: str) -> list[str]:
    """The command line of ``rtc-signal serve`` on a free loopback port."""
    exe = shutil.which("rtc-signal")
    argv = [exe] if exe else [sys.executable, "-m", "rtc_signal.signaling.cli"]
    return [*argv, "serve", "--port", "0", "--log-level", "warning", *extra]


def start_rtc_signal(*extra: str) -> ServerProc:
    return _start("rtc-signal", rtc_signal_argv(*RTC_SIGNAL_BENCH_ARGS, *extra))


def start_naive() -> ServerProc:
    return _start("naive", [sys.executable, str(HERE / "_naive_relay.py"), "--port", "0"])


_PEERJS_SCRIPT = """\
// Started by benchmarks/_common.py: the PeerJS server on loopback, port 0.
const { PeerServer } = require("peer");
const server = PeerServer(
  { host: "127.0.0.1", port: 0, path: "/", key: "peerjs", concurrent_limit: 1000000 },
  (srv) => {
    console.log(`listening on ws://127.0.0.1:${srv.address().port}`);
  },
);
for (const sig of ["SIGTERM", "SIGINT"]) process.on(sig, () => process.exit(0));
"""


def ensure_peerjs(quiet: bool = True) -> Path:
    """``npm install peer`` into benchmarks/.cache/peerjs (once); return the folder."""
    PEERJS_DIR.mkdir(parents=True, exist_ok=True)
    (PEERJS_DIR / "serve.js").write_text(_PEERJS_SCRIPT)
    if not (PEERJS_DIR / "node_modules" / "peer" / "package.json").exists():
        pkg = PEERJS_DIR / "package.json"
        if not pkg.exists():
            pkg.write_text('{"name": "rtc-signal-bench-peerjs", "private": true}\n')
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("npm is not installed; cannot benchmark PeerJS")
        print(
            f"installing the PeerJS server (npm install peer) into {PEERJS_DIR} ...",
            file=sys.stderr,
        )
        subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", "peer"],
            cwd=PEERJS_DIR,
            check=True,
            timeout=300,
            stdout=subprocess.DEVNULL if quiet else None,
        )
    return PEERJS_DIR


def peerjs_version() -> str:
    data = json.loads((PEERJS_DIR / "node_modules" / "peer" / "package.json").read_text())
    return str(data["version"])


def start_peerjs() -> ServerProc:
    folder = ensure_peerjs()
    node = shutil.which("node") or "node"
    server = _start("peerjs", [node, "serve.js"], cwd=folder)
    server.info["version"] = peerjs_version()
    return server


def start_command(name: str, command: str) -> ServerProc:
    """Any server of the rtc-signal protocol started by a shell-like command line."""
    return _start(name, shlex.split(command))


STARTERS: dict[str, Callable[[], ServerProc]] = {
    "rtc-signal": start_rtc_signal,
    "naive": start_naive,
    "peerjs": start_peerjs,
}


SERVERS = ("rtc-signal", "naive", "peerjs")


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """``--servers``, ``--extra NAME=COMMAND`` and the hidden ``--worker`` of both scripts."""
    parser.add_argument("--servers", nargs="+", default=list(SERVERS), choices=SERVERS)
    parser.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="NAME=COMMAND",
        help="also measure the rtc-signal protocol server started by COMMAND, which must "
        "print 'listening on ws://HOST:PORT' (e.g. another version, for before/after)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)


def chosen_starters(args: argparse.Namespace) -> dict[str, Callable[[], ServerProc]]:
    """The servers to measure, by name: ``--servers`` then every ``--extra``."""
    starters = {name: STARTERS[name] for name in args.servers}
    for extra in args.extra:
        name, _, command = extra.partition("=")
        starters[name] = functools.partial(start_command, name, command)
    return starters


def readline_by(stream: IO[bytes], deadline: float) -> bytes:
    """One line from a child's pipe, or b"" at the ``time.monotonic()`` deadline."""
    ready, _, _ = select.select([stream], [], [], max(0.0, deadline - time.monotonic()))
    return stream.readline() if ready else b""


def run_worker(script: str, cfg: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run ``script --worker CFG`` (the load generator) in its own process."""
    proc = subprocess.run(
        [sys.executable, script, "--worker", json.dumps(cfg)],
        capture_output=True,
        timeout=timeout,
        preexec_fn=raise_fd_limit,
        check=False,
    )
    return worker_result(proc.returncode, proc.stdout, proc.stderr)


def worker_result(returncode: int, out: bytes, err: bytes) -> dict[str, Any]:
    """A load generator's result: the JSON of its last line of output
    (RuntimeError with its stderr if it failed or printed nothing)."""
    lines = out.decode(errors="replace").strip().splitlines()
    if returncode != 0 or not lines:
        raise RuntimeError(f"worker failed ({returncode}): {err.decode(errors='replace')[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def set_deadline(seconds: float) -> None:
    """Bound the whole run: SIGALRM ends the process (children are stopped by
    the ``finally`` blocks of the scripts)."""

    def _expired(signum: int, frame: object) -> None:
        raise TimeoutError(f"benchmark exceeded its {seconds:.0f} s time limit")

    signal.signal(signal.SIGALRM, _expired)
    signal.alarm(max(1, int(seconds)))


# -- statistics and tables --------------------------------------------------------


@dataclass
class Sample:
    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(value)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    def spread(self, fmt: str = "{:,.0f}") -> str:
        if not self.values:
            return "-"
        lo, hi = fmt.format(min(self.values)), fmt.format(max(self.values))
        return f"{fmt.format(self.median)} ({lo}-{hi})"


def table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], numbers_right: bool = False
) -> str:
    """A Markdown table; ``numbers_right`` right-aligns every column but the first."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    aligns = ["<"] + [">" if numbers_right else "<"] * (len(headers) - 1)

    def fmt(cells: Sequence[str]) -> str:
        return (
            "| "
            + " | ".join(f"{c:{a}{w}}" for c, a, w in zip(cells, aligns, widths, strict=True))
            + " |"
        )

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([fmt(headers), sep, *(fmt(r) for r in rows)])


@dataclass
class Row:
    """One line of :func:`print_table`: a label and its samples (one per run)."""

    label: str
    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")


def print_table(
    title: str,
    unit: str,
    rows: Sequence[Row],
    baselines: Sequence[tuple[str, Row]],
    digits: int = 1,
    note: str = "",
) -> None:
    """One line per row: median, min, max, runs, and the ratio of its median to
    each baseline's median."""
    headers = ["", f"median {unit}", f"min {unit}", f"max {unit}", "runs"]
    headers += [f"ratio vs {name}" for name, _ in baselines]
    cells = []
    for row in rows:
        if not row.values:
            cells.append([row.label, "-", "-", "-", "0", *("-" for _ in baselines)])
            continue
        line = [
            row.label,
            f"{row.median:,.{digits}f}",
            f"{min(row.values):,.{digits}f}",
            f"{max(row.values):,.{digits}f}",
            str(len(row.values)),
        ]
        for _, base in baselines:
            ratio = row.median / base.median if base.values and base.median else float("nan")
            line.append(f"{ratio:.2f}x")
        cells.append(line)
    print(f"\n## {title}\n")
    print(table(headers, cells, numbers_right=True))
    if note:
        print(f"\n{note}")
    sys.stdout.flush()


def machine(*packages: str) -> str:
    """CPU, Python and kernel, and the versions of ``packages`` that are installed."""
    cpu = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = ""
    for package in packages:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions += f"{package} {importlib.metadata.version(package)}, "
    return (
        f"{os.cpu_count()} CPU(s) ({cpu}), Python {sys.version.split()[0]}, "
        f"{versions}Linux {os.uname().release}"
    )


# -- child processes of a benchmark: all tracked, all stopped --------------------------

#: every long-running child a script started (append to it) and the log
#: files they write; :func:`stop_children` ends the former and deletes the latter
children: list[subprocess.Popen[Any]] = []
logs: list[str] = []


def stop_children(timeout: float = 5.0) -> None:
    """SIGTERM every child still running, then SIGKILL what is left."""
    for proc in children:
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.terminate()
    deadline = time.monotonic() + timeout
    for proc in children:
        try:
            proc.wait(max(0.01, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(2)
    children.clear()
    for path in logs:
        with contextlib.suppress(OSError):
            os.unlink(path)
    logs.clear()


def spawn(argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start a child (stdin from /dev/null unless given) and track it in :data:`children`."""
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    proc = subprocess.Popen(list(argv), **kwargs)
    children.append(proc)
    return proc


def on_fatal_signal(signum: int, frame: object) -> None:
    """SIGALRM (the time limit), SIGTERM, SIGHUP: stop every child and exit now."""
    if signum == signal.SIGALRM:
        print("benchmark exceeded its --time-limit; stopping", file=sys.stderr, flush=True)
    stop_children(2.0)
    os._exit(3 if signum == signal.SIGALRM else 128 + signum)


def guard_children(time_limit: float) -> None:
    """Stop every child at exit, on SIGTERM/SIGHUP, and after ``time_limit``
    seconds (SIGALRM, which also ends this process with status 3)."""
    atexit.register(stop_children)
    for sig in (signal.SIGALRM, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_fatal_signal)
    signal.alarm(max(1, int(time_limit)))


def console_script(name: str) -> list[str]:
    """The installed entry point of this interpreter itself (not a pyenv shim,
    which costs ~0.4 s per start), or ``python -m`` as a fallback; same
    interpreter either way."""
    script = Path(sysconfig.get_path("scripts")) / name
    if script.exists():
        return [str(script)]
    module = {"rtc-peer": "rtc_signal.peers.cli", "rtc-signal": "rtc_signal.signaling.cli"}[name]
    return [sys.executable, "-m", module]


def _log_file(name: str) -> tuple[int, str]:
    """A temporary log file for a child's stderr (deleted by :func:`stop_children`)."""
    fd, log = tempfile.mkstemp(prefix=f"bench-peers-{name}-", suffix=".log")
    logs.append(log)
    return fd, log


@dataclass
class Helper:
    """A long-running child process whose stderr goes to a log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log: str

    @classmethod
    def start(cls, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> Helper:
        """Start ``argv`` (with ``env`` if given, else our environment)."""
        fd, log = _log_file(name)
        try:
            proc = spawn(argv, stdout=subprocess.DEVNULL, stderr=fd, cwd=REPO, env=env)
        finally:
            os.close(fd)
        return cls(name, proc, log)

    def text(self) -> str:
        try:
            return Path(self.log).read_text(errors="replace")
        except OSError:
            return ""

    def wait_line(self, prefix: str, timeout: float = 20.0) -> str:
        """The first stderr line starting with ``prefix`` (bounded wait)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.text().splitlines():
                if line.startswith(prefix):
                    return line
            if self.proc.poll() is not None:
                break
            time.sleep(0.01)
        raise RuntimeError(
            f"{self.name} not ready ({prefix!r} not seen; exit status {self.proc.poll()}):\n"
            + self.text()[-3000:]
        )

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited ({self.proc.returncode}):\n{self.text()[-3000:]}"
            )


def read_stdout_until(
    proc: subprocess.Popen[bytes], prefix: str | None, deadline: float
) -> tuple[str | None, bytes]:
    """Read ``proc``'s stdout (a pipe) until a complete line starting with
    ``prefix`` arrives (any line if ``prefix`` is empty; never if None) or
    until EOF. Returns that line (None at EOF) and the bytes read; raises
    TimeoutError at ``deadline`` (``time.monotonic()``)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    out = b""
    scanned = 0
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            if not sel.select(remaining):
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return None, out
            out += chunk
            while (end := out.find(b"\n", scanned)) >= 0:
                line = out[scanned:end].decode(errors="replace")
                scanned = end + 1
                if prefix is not None and line.startswith(prefix):
                    return line, out


@dataclass
class Timed:
    #: seconds from Popen to the wanted stdout line (None if not wanted)
    first_line: float | None
    #: seconds from Popen to exit (after SIGTERM at the line, with ``stop_at_line``)
    exited: float
    #: the wanted line ("" if not wanted)
    line: str


def time_process(
    argv: Sequence[str],
    timeout: float,
    want_line: bool,
    prefix: str = "",
    stop_at_line: bool = False,
) -> Timed:
    """Start ``argv``; seconds from Popen to its first stdout line starting with
    ``prefix`` (any line by default) and to its exit. With ``stop_at_line``, the
    process is terminated (SIGTERM) once that line came and its exit status is
    not checked. Fails (RuntimeError) on a timeout, a non-zero exit status or,
    with ``want_line``, no such line."""
    fd, log = _log_file("proc")
    t0 = time.perf_counter()
    try:
        proc = spawn(argv, stdout=subprocess.PIPE, stderr=fd, bufsize=0, cwd=REPO)
    finally:
        os.close(fd)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    out = b""
    first: float | None = None
    line: str | None = None
    try:
        line, out = read_stdout_until(proc, prefix if want_line else None, deadline)
        if line is not None:
            first = time.perf_counter() - t0
            if stop_at_line:
                proc.terminate()
            else:
                out += read_stdout_until(proc, None, deadline)[1]
        proc.wait(max(0.01, deadline - time.monotonic()))
        exited = time.perf_counter() - t0
    except (TimeoutError, subprocess.TimeoutExpired):
        proc.kill()
        proc.wait(5)
        raise RuntimeError(
            f"{' '.join(argv)} did not finish within {timeout:g} s:\n"
            f"{out.decode(errors='replace')}{Path(log).read_text(errors='replace')[-2000:]}"
        ) from None
    finally:
        proc.stdout.close()
    if (proc.returncode != 0 and not (stop_at_line and line is not None)) or (
        want_line and first is None
    ):
        raise RuntimeError(
            f"{' '.join(argv)} failed (exit status {proc.returncode}):\n"
            f"{out.decode(errors='replace')}{Path(log).read_text(errors='replace')[-2000:]}"
        )
    return Timed(first, exited, line or "")


def start_server(program: Sequence[str] | None = None) -> tuple[Helper, str]:
    """``rtc-signal serve --port 0`` (the installed console script, or
    ``program``; default options) as a tracked :class:`Helper`, and its
    ``ws://`` URL."""
    fd, log = _log_file("rtc-signal")
    argv = [*(program or console_script("rtc-signal")), "serve", "--port", "0"]
    try:
        proc = spawn(
            [*argv, "--log-level", "warning"],
            stdout=subprocess.PIPE,
            stderr=fd,
            cwd=REPO,
        )
    finally:
        os.close(fd)
    server = Helper("rtc-signal", proc, log)
    assert proc.stdout is not None
    out = b""
    try:
        line, out = read_stdout_until(proc, "listening on ", time.monotonic() + 20)
    except TimeoutError:
        line = None
    if line is None:
        raise RuntimeError(f"rtc-signal did not start: {out!r}\n{server.text()[-2000:]}")
    proc.stdout.close()  # nothing else comes on stdout
    return server, line.split()[-1]
