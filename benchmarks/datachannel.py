"""Peer benchmarks: start-up to open data channel, and data-channel RTT/throughput.

Usage: ``python benchmarks/datachannel.py [--runs 5] [--only startup|channel]``

Everything runs on loopback: every peer gathers host candidates on 127.0.0.1
only and no ICE (STUN/TURN) server is ever configured. Each figure is the
median of ``--runs`` runs (min and max shown too), and every table has a
baseline measured in the same run, interleaved with the measurement (run 1 of
every row, then run 2, ...), for the ratio column.

1. Start-up: ``rtc-peer offer --count 1`` processes call an ``rtc-peer answer``
   process (``--interval 0``, serving successive callers). Timed from Popen to
   the offer's first stdout line (printed right after its data channel opened)
   and to its exit. Baseline: ``python -c "import aiortc, websockets, click,
   pydantic"`` (interpreter + imports). In-process ``peers.call()`` against
   the same answer peer shows the negotiation alone (no start-up).
2. Data channel between this process (library API) and another one: RTT of
   small messages sent one at a time to ``examples/echo_answer.py``, and
   throughput of a bulk transfer (``Channel.send``, with its backpressure) to
   ``benchmarks/_sink_answer.py``, timed until the sink acknowledges the last
   byte. Baselines: the same messages/bytes over a websockets connection and
   over a plain TCP socket to another process (``_sink_answer.py --baseline``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

from _common import (  # noqa: E402
    Helper,
    Row,
    console_script,
    guard_children,
    machine,
    print_table,
    start_server,
    stop_children,
    time_process,
)
from websockets.asyncio.client import connect as ws_connect  # noqa: E402

from rtc_signal.peers import Call, Channel, IceSettings, PeerConfig, call  # noqa: E402

HOST = "127.0.0.1"
LOOPBACK = ("--host-address", HOST)
ICE = IceSettings(host_addresses=(HOST,))  # never any ICE server
BASELINE_IMPORTS = "import aiortc, websockets, click, pydantic"

# -- 1. start-up to open channel ---------------------------------------------------


async def time_inprocess_call(url: str, target: str, timeout: float) -> float:
    """Seconds from entering ``peers.call()`` to the data channel being open."""
    config = PeerConfig(signal_url=url, ice=ICE, connect_timeout=timeout)
    async with asyncio.timeout(timeout + 10):
        t0 = time.perf_counter()
        async with call(config, target) as c:
            opened = time.perf_counter() - t0
            assert c.channel.opened.is_set()
    return opened


async def bench_startup(url: str, runs: int, timeout: float) -> None:
    answer = Helper.start(
        "rtc-peer-answer",
        [
            *console_script("rtc-peer"),
            "answer",
            "--id",
            "bench",
            "--signal",
            url,
            *LOOPBACK,
            "--interval",
            "0",
        ],
    )
    answer.wait_line("rtc-peer: registered as")
    offer_argv = [
        *console_script("rtc-peer"),
        "offer",
        "--target",
        "bench",
        "--signal",
        url,
        *LOOPBACK,
        "--interval",
        "0",
        "--count",
        "1",
        "--connect-timeout",
        str(timeout),
    ]
    bare = Row("python -c 'print()'")
    imports = Row(f"python -c '{BASELINE_IMPORTS}; print()' (baseline)")
    cli = Row("python -c 'import rtc_signal.peers.cli; print()'")
    opened = Row("rtc-peer offer: Popen -> channel open (1st stdout line)")
    exited = Row("rtc-peer offer: Popen -> exit (1 msg each way, close)")
    negotiation = Row("  channel open minus baseline, per run")
    inproc = Row("rtc_signal.peers.call() in-process: call -> channel open")
    first_lines: set[str] = set()

    def python_line(code: str) -> float:
        timed = time_process([sys.executable, "-c", f"{code}; print()"], timeout, True)
        assert timed.first_line is not None
        return timed.first_line

    def one_run(record: bool) -> None:
        t_bare = python_line("pass")
        t_imp = python_line(BASELINE_IMPORTS)
        t_cli = python_line("import rtc_signal.peers.cli")
        offer = time_process(offer_argv, timeout + 10, True)
        answer.check_alive()
        assert offer.first_line is not None
        if record:
            bare.values.append(t_bare * 1e3)
            imports.values.append(t_imp * 1e3)
            cli.values.append(t_cli * 1e3)
            opened.values.append(offer.first_line * 1e3)
            exited.values.append(offer.exited * 1e3)
            negotiation.values.append((offer.first_line - t_imp) * 1e3)
            first_lines.add(offer.line)

    one_run(record=False)  # warm-up: file cache, .pyc files
    await time_inprocess_call(url, "bench", timeout)  # warm-up: lazy imports, first pc
    for _ in range(runs):
        one_run(record=True)
        inproc.values.append(await time_inprocess_call(url, "bench", timeout) * 1e3)
    answer.check_alive()
    print_table(
        "Start-up: `rtc-peer offer` process start to open data channel",
        "ms",
        [bare, imports, cli, opened, exited, negotiation, inproc],
        [("baseline", imports)],
        note=(
            "The answer peer is one `rtc-peer answer --interval 0` process serving every "
            "caller; each offer is a fresh\n`rtc-peer offer --count 1 --interval 0` process "
            f"(first stdout line: {', '.join(sorted(first_lines)) or '-'}).\n"
            "The `python -c` rows are timed to the line printed after the imports (so "
            "without interpreter teardown,\nlike the offer's first line). In-process "
            "calls use the same answer peer and exclude start-up and imports.\n"
            "One warm-up run of each (not counted)."
        ),
    )


# -- 2. data channel: RTT and throughput -------------------------------------------


async def _receive(channel: Channel, timeout: float) -> str | bytes:
    return await asyncio.wait_for(channel.receive(), timeout)


async def rtt_channel(url: str, n: int, size: int, timeout: float) -> list[float]:
    config = PeerConfig(signal_url=url, ice=ICE, connect_timeout=timeout)
    payload = os.urandom(size)
    samples = []
    async with asyncio.timeout(timeout + 30), call(config, "echo") as c:
        for i in range(n + 20):  # 20 warm-up round trips
            t0 = time.perf_counter()
            await c.channel.send(payload)
            reply = await _receive(c.channel, timeout)
            if i >= 20:
                samples.append(time.perf_counter() - t0)
            if reply != payload:
                raise RuntimeError(f"echo sent back {reply!r:.60}")
        await c.channel.close(2.0)
    return samples


async def rtt_ws(port: int, n: int, size: int, timeout: float) -> list[float]:
    payload = os.urandom(size)
    samples = []
    async with (
        asyncio.timeout(timeout + 30),
        ws_connect(f"ws://{HOST}:{port}/echo", compression=None) as ws,
    ):
        for i in range(n + 20):
            t0 = time.perf_counter()
            await ws.send(payload)
            reply = await asyncio.wait_for(ws.recv(), timeout)
            if i >= 20:
                samples.append(time.perf_counter() - t0)
            if reply != payload:
                raise RuntimeError("websockets echo mismatch")
    return samples


async def rtt_tcp(port: int, n: int, size: int, timeout: float) -> list[float]:
    payload = os.urandom(size)
    samples = []
    async with asyncio.timeout(timeout + 30):
        reader, writer = await asyncio.open_connection(HOST, port)  # TCP_NODELAY: asyncio's default
        try:
            writer.write(b"echo\n")
            for i in range(n + 20):
                t0 = time.perf_counter()
                writer.write(payload)
                reply = await asyncio.wait_for(reader.readexactly(size), timeout)
                if i >= 20:
                    samples.append(time.perf_counter() - t0)
                if reply != payload:
                    raise RuntimeError("TCP echo mismatch")
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
    return samples


@dataclass
class Transfer:
    seconds: float
    sender_cpu: float
    receiver_cpu: float
    peak_buffered: int = 0
    #: UDP datagrams dropped on the (sender's, receiver's) socket, -1 if unknown
    drops: tuple[int, int] = (-1, -1)


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ice_ports(c: Call) -> tuple[int, int] | None:
    """(our, their) UDP port of the call's selected ICE pair (aioice internals;
    None if they changed)."""
    try:
        sctp = c.pc.sctp
        if sctp is None:
            return None
        pair = sctp.transport.transport._connection._nominated[1]
        local = pair.protocol.transport.get_extra_info("sockname")
        return int(local[1]), int(pair.remote_addr[1])
    except (AttributeError, KeyError, IndexError, TypeError):
        return None


def udp_drops(port: int) -> int:
    """Datagrams the kernel dropped on the loopback UDP socket bound to ``port``
    (its receive buffer was full): the ``drops`` column of /proc/net/udp."""
    wanted = f"0100007F:{port:04X}"
    with contextlib.suppress(OSError), open("/proc/net/udp") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 12 and fields[1] == wanted:
                return int(fields[-1])
    return -1


async def _timed_transfer(
    receiver_pid: int,
    timeout: float,
    body: Callable[[], Any],
) -> Transfer:
    cpu0, rcpu0 = time.process_time(), _cpu_seconds(receiver_pid)
    t0 = time.perf_counter()
    await asyncio.wait_for(body(), timeout)
    seconds = time.perf_counter() - t0
    return Transfer(seconds, time.process_time() - cpu0, _cpu_seconds(receiver_pid) - rcpu0)


async def throughput_channel(
    url: str, total: int, chunk: int, timeout: float, sink_pid: int, backpressure: bool = True
) -> Transfer:
    """``total`` bytes to the sink peer; with ``backpressure``, through
    ``Channel.send``, else all handed to ``RTCDataChannel.send`` at once."""
    config = PeerConfig(signal_url=url, ice=ICE, connect_timeout=timeout)
    data = os.urandom(chunk)
    peak = 0
    async with asyncio.timeout(timeout + 30), call(config, "sink") as c:
        channel = c.channel

        async def transfer() -> None:
            nonlocal peak
            await channel.send(f"expect {total}")
            for _ in range(total // chunk):
                if backpressure:
                    await channel.send(data)
                else:
                    channel.dc.send(data)
                peak = max(peak, channel.dc.bufferedAmount)
            reply = await channel.receive()
            if reply != f"got {total}":
                raise RuntimeError(f"sink replied {reply!r:.60}")

        ports = ice_ports(c)
        drops0 = (udp_drops(ports[0]), udp_drops(ports[1])) if ports else (-1, -1)
        result = await _timed_transfer(sink_pid, timeout, transfer)
        result.peak_buffered = peak
        if ports:
            drops1 = (udp_drops(ports[0]), udp_drops(ports[1]))
            result.drops = (drops1[0] - drops0[0], drops1[1] - drops0[1])
        await channel.close(2.0)
    return result


async def throughput_ws(port: int, total: int, chunk: int, timeout: float, pid: int) -> Transfer:
    data = os.urandom(chunk)
    async with (
        asyncio.timeout(timeout + 30),
        ws_connect(f"ws://{HOST}:{port}/sink", compression=None) as ws,
    ):

        async def transfer() -> None:
            await ws.send(f"expect {total}")
            for _ in range(total // chunk):
                await ws.send(data)
            reply = await ws.recv()
            if reply != f"got {total}":
                raise RuntimeError(f"websockets sink replied {reply!r:.60}")

        return await _timed_transfer(pid, timeout, transfer)


async def throughput_tcp(port: int, total: int, chunk: int, timeout: float, pid: int) -> Transfer:
    data = os.urandom(chunk)
    async with asyncio.timeout(timeout + 30):
        reader, writer = await asyncio.open_connection(HOST, port)
        try:

            async def transfer() -> None:
                writer.write(f"expect {total}\n".encode())
                for _ in range(total // chunk):
                    writer.write(data)
                    await writer.drain()
                reply = await reader.readline()
                if reply != f"got {total}\n".encode():
                    raise RuntimeError(f"TCP sink replied {reply!r:.60}")

            return await _timed_transfer(pid, timeout, transfer)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def bench_channel(
    url: str, runs: int, timeout: float, rtt_n: int, rtt_size: int, total: int, chunk: int
) -> None:
    echo = Helper.start(
        "echo",
        [sys.executable, str(REPO / "examples" / "echo_answer.py"), "--id", "echo",
         "--signal", url, *LOOPBACK],
    )  # fmt: skip
    sink = Helper.start(
        "sink",
        [sys.executable, str(HERE / "_sink_answer.py"), "--id", "sink", "--signal", url,
         *LOOPBACK],
    )  # fmt: skip
    base = Helper.start("baseline", [sys.executable, str(HERE / "_sink_answer.py"), "--baseline"])
    echo.wait_line("echo: registered")
    sink.wait_line("sink: registered")
    words = base.wait_line("baseline: tcp").split()
    tcp_port, ws_port = int(words[2]), int(words[4])

    # RTT
    dc_rtt = Row("data channel (examples/echo_answer.py)")
    ws_rtt = Row("websockets (baseline)")
    tcp_rtt = Row("plain TCP socket")
    for run in range(runs + 1):  # run 0: warm-up
        rtts = (
            await rtt_channel(url, rtt_n, rtt_size, timeout),
            await rtt_ws(ws_port, rtt_n, rtt_size, timeout),
            await rtt_tcp(tcp_port, rtt_n, rtt_size, timeout),
        )
        if run:
            for row, samples in zip((dc_rtt, ws_rtt, tcp_rtt), rtts, strict=True):
                row.values.append(statistics.median(samples) * 1e6)
    echo.check_alive()
    print_table(
        f"Round trip of a {rtt_size}-byte binary message, sent one at a time "
        "(median per run of {n} round trips)".format(n=rtt_n),
        "us",
        [dc_rtt, ws_rtt, tcp_rtt],
        [("websockets", ws_rtt), ("TCP", tcp_rtt)],
        digits=0,
        note="Each run: a new call (or connection), 20 warm-up round trips, then "
        f"{rtt_n} timed ones; one warm-up run (not counted).",
    )

    # throughput
    mb = total / 1e6
    rows = {
        "dc": Row("data channel, Channel.send (_sink_answer.py)"),
        "raw": Row("  same, RTCDataChannel.send, no backpressure"),
        "ws": Row("websockets (baseline)"),
        "tcp": Row("plain TCP socket"),
    }
    transfers: dict[str, list[Transfer]] = {key: [] for key in rows}
    for run in range(runs + 1):
        n = total if run else total // 8  # run 0: a smaller warm-up transfer
        results = {
            "dc": await throughput_channel(url, n, chunk, timeout, sink.proc.pid),
            "raw": await throughput_channel(url, n, chunk, timeout, sink.proc.pid, False),
            "ws": await throughput_ws(ws_port, n, chunk, timeout, base.proc.pid),
            "tcp": await throughput_tcp(tcp_port, n, chunk, timeout, base.proc.pid),
        }
        if run:
            for key, t in results.items():
                rows[key].values.append(mb / t.seconds)
                transfers[key].append(t)
    sink.check_alive()

    def cpu(key: str) -> str:
        send = statistics.median(t.sender_cpu / t.seconds for t in transfers[key]) * 100
        recv = statistics.median(t.receiver_cpu / t.seconds for t in transfers[key]) * 100
        return f"{send:.0f}% / {recv:.0f}%"

    def drops(key: str) -> str:
        pairs = [t.drops for t in transfers[key]]
        if min(min(p) for p in pairs) < 0:
            return "unknown"
        return " ".join(f"{s}/{r}" for s, r in pairs)

    def peak(key: str) -> str:
        return f"{max(t.peak_buffered for t in transfers[key]) / 2**20:.1f} MiB"

    print_table(
        f"Throughput: {total / 2**20:g} MiB in {chunk // 1024} KiB binary messages, "
        "until the receiver acknowledges the last byte",
        "MB/s",
        list(rows.values()),
        [("websockets", rows["ws"]), ("TCP", rows["tcp"])],
        note=(
            "MB = 10^6 bytes. Each run: a new call (or connection); one smaller warm-up run "
            "(not counted).\nCPU busy (median, sender / receiver process): "
            + ", ".join(f"{key} {cpu(key)}" for key in rows)
            + f".\nPeak bufferedAmount: Channel.send {peak('dc')}, no backpressure "
            f"{peak('raw')}.\nUDP datagrams dropped by the kernel (socket receive buffer "
            "full), sender (SACKs) / receiver (DATA), per run:\n"
            f"  Channel.send {drops('dc')}; no backpressure {drops('raw')}."
        ),
    )


# -- main ---------------------------------------------------------------------------


async def amain(args: argparse.Namespace) -> None:
    server, url = start_server()
    print(f"# rtc-signal peer benchmarks ({args.runs} runs each, loopback only)\n")
    print(f"Machine: {machine('aiortc', 'websockets')}")
    print("Load average at start (1/5/15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print(f"Signaling: {' '.join(console_script('rtc-signal'))} serve on {url}")
    sys.stdout.flush()
    if args.only in (None, "startup"):
        await bench_startup(url, args.runs, args.timeout)
    if args.only in (None, "channel"):
        await bench_channel(
            url,
            args.runs,
            args.timeout,
            args.rtt_messages,
            args.rtt_size,
            int(args.bulk_mib * 2**20) // (args.chunk_kib * 1024) * (args.chunk_kib * 1024),
            args.chunk_kib * 1024,
        )
    server.check_alive()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (median)")
    parser.add_argument("--only", choices=["startup", "channel"], help="one part only")
    parser.add_argument("--rtt-messages", type=int, default=200, help="round trips per run")
    parser.add_argument("--rtt-size", type=int, default=32, help="bytes per RTT message")
    parser.add_argument("--bulk-mib", type=float, default=20, help="MiB per throughput run")
    parser.add_argument("--chunk-kib", type=int, default=16, help="KiB per bulk message")
    parser.add_argument(
        "--timeout", type=float, default=30, help="seconds allowed for any one wait"
    )
    parser.add_argument(
        "--time-limit", type=float, default=300, help="seconds for the whole run, then stop"
    )
    args = parser.parse_args()
    if args.runs < 1 or args.rtt_messages < 1 or args.chunk_kib < 1:
        parser.error("--runs, --rtt-messages and --chunk-kib must be at least 1")
    guard_children(args.time_limit)
    started = time.monotonic()
    try:
        asyncio.run(amain(args))
    except KeyboardInterrupt:
        return 130
    finally:
        signal.alarm(0)
        stop_children()
    print(
        f"\nTotal time: {time.monotonic() - started:.0f} s; load average at the end: "
        "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
