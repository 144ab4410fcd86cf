"""`rtc-peer bench` against a real `rtc-peer answer` (processes on 127.0.0.1),
and the bench protocol's failure paths through the library (real server and
aiortc peers in this process)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from rtc_signal.peers import AnswerPeer, Call, IceSettings, PeerConfig, PeerError, call
from rtc_signal.peers.bench import BENCH_LABEL, BenchResult, run_bench, serve_bench
from tests.conftest import run, running_server
from tests.integration.procs import (
    FAST,
    LOOPBACK,
    run_peer,
    server,
    start_peer,
    stop,
    wait_registered,
)

KEYS = {"setup_ms", "throughput_MBps", "rtt_p50_ms", "rtt_p99_ms"}


def _check_figures(figures: dict[str, Any]) -> None:
    assert set(figures) == KEYS, figures
    for key, value in figures.items():
        assert isinstance(value, int | float) and not isinstance(value, bool), (key, value)
        assert value > 0, (key, value)
    assert figures["rtt_p99_ms"] >= figures["rtt_p50_ms"]


# -- the command, against a timer-mode answer peer ------------------------------------


@contextlib.contextmanager
def answer_process(url: str, peer_id: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    """A registered `rtc-peer answer` process, stopped (SIGINT) whatever happens."""
    proc = start_peer("answer", "--id", peer_id, "--signal", url, *LOOPBACK, *args)
    try:
        wait_registered(proc)
        yield proc
    finally:
        if proc.poll() is None or (proc.stdout is not None and not proc.stdout.closed):
            stop(proc, signal.SIGINT)  # not yet stopped (and collected) by the test


def test_bench_json_against_a_timer_answer_then_a_normal_offer_succeeds() -> None:
    """`bench --json --seconds 1` against a default (timer) `rtc-peer answer`
    prints one JSON object with exactly the four positive figures, and the
    answer peer then still serves a normal offer."""
    with server() as url, answer_process(url, "bt", "--interval", "0.2") as answer:
        bench = run_peer(
            "bench", "--target", "bt", "--signal", url, *LOOPBACK, "--json", "--seconds", "1"
        )
        offer = run_peer("offer", "--target", "bt", "--signal", url, *LOOPBACK, *FAST)
        assert answer.poll() is None, "the answer peer must keep serving"
        answered = stop(answer, signal.SIGINT)
    assert bench.returncode == 0, bench.stderr + answered.stderr
    _check_figures(json.loads(bench.stdout))
    assert offer.returncode == 0, offer.stderr + answered.stderr
    assert offer.lines("recv ") == [f"recv answer-{n}" for n in range(1, 6)]
    assert "Traceback" not in answered.stderr, answered.stderr


def test_bench_text_output_mentions_each_figure_and_a_second_bench_succeeds() -> None:
    """Without --json the output names setup, MB/s (10^6 bytes), RTT p50 and
    p99; two benches in a row against one answer peer both succeed."""
    with server() as url, answer_process(url, "bt2") as answer:
        args = ("--target", "bt2", "--signal", url, *LOOPBACK, "--seconds", "0.5")
        first = run_peer("bench", *args, "--size", "16384")
        second = run_peer("bench", *args, "--json")
        answered = stop(answer, signal.SIGINT)
    assert first.returncode == 0, first.stderr + answered.stderr
    text = first.stdout
    for words in ("setup", "ms", "throughput", "MB/s", "10^6 bytes", "p50", "p99"):
        assert words in text, text
    assert "16,384-byte messages" in text, text
    assert second.returncode == 0, second.stderr + answered.stderr
    _check_figures(json.loads(second.stdout))


def test_too_large_message_size_is_one_clear_error_line() -> None:
    """--size beyond the answer peer's a=max-message-size (aiortc: 256 KiB) exits
    1 with one line naming the limit, before any data is sent."""
    with server() as url, answer_process(url, "bt3"):
        result = run_peer(
            "bench", "--target", "bt3", "--signal", url, *LOOPBACK, "--size", "262145"
        )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("rtc-peer: error: message size 262,145"), result.stderr
    assert "262,144 bytes" in last and "Traceback" not in result.stderr


# -- the library: the answer side's end, and peers that stop answering --------------

ICE = IceSettings(host_addresses=("127.0.0.1",))
Handler = Callable[[Call], Awaitable[None]]


@contextlib.asynccontextmanager
async def answer_peer(
    url: str, handler: Handler, max_calls: int | None = None
) -> AsyncIterator[asyncio.Task[None]]:
    """An in-process AnswerPeer 'lib' running ``handler``; yields its serve task
    (cancelled and awaited on exit if still running, so none outlives the test)."""
    peer = AnswerPeer(PeerConfig(signal_url=url, ice=ICE, connect_timeout=10), "lib")
    task = asyncio.create_task(peer.serve(handler, max_calls))
    try:
        await peer.wait_registered(5)
        yield task
    finally:
        if not task.done():  # a finished task's outcome is the test's to check
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 10)


async def _bench(url: str, seconds: float, size: int, reply_timeout: float) -> BenchResult:
    config = PeerConfig(signal_url=url, ice=ICE, connect_timeout=10)
    async with call(config, "lib", label=BENCH_LABEL) as c:
        return await run_bench(c, seconds, size, reply_timeout)


def test_serve_bench_returns_cleanly_when_the_caller_closes() -> None:
    """run_bench closes the channel when done, and the answer side's serve_bench
    returns on that close (the connection still up), without error."""
    ended_with: list[str] = []

    async def handler(c: Call) -> None:
        await serve_bench(c.channel)
        # Still connected: the channel's own close ended it, not the caller
        # tearing down the whole connection.
        ended_with.append(c.pc.connectionState)

    async def scenario() -> BenchResult:
        async with (
            running_server() as srv,
            answer_peer(srv.url, handler, max_calls=1) as serving,
        ):
            result = await _bench(srv.url, 0.3, 4096, 5.0)
            await asyncio.wait_for(serving, 10)  # one call served: raises its error if any
            return result

    result = run(scenario())
    assert ended_with == ["connected"]
    _check_figures(result.as_json())
    assert result.delivered_bytes > 0 and result.delivered_bytes % 4096 == 0
    assert 200 <= result.round_trips <= 500


async def _silent(c: Call) -> None:
    # Reads nothing, answers nothing: a peer that stopped answering.
    await asyncio.wait_for(c.channel.closed.wait(), 20)


async def _pings_only(c: Call) -> None:
    # Echoes pings but never acknowledges throughput bytes.
    async for message in c.channel:
        if isinstance(message, str) and '"ping"' in message:
            await c.channel.send(message)


@pytest.mark.parametrize(
    ("handler", "expected"),
    [
        (_silent, ("'lib' did not answer ping 0 within 1 s",)),
        # Which limit trips first depends on how fast the channel drains the
        # burst: the missing acknowledgement, or the sender left blocked with
        # nothing acknowledged. Both name the peer and what it failed to do.
        (
            _pings_only,
            (
                "'lib' did not answer the acknowledgement of ",
                "'lib' stopped taking data: still blocked 1 s after the 0.2 s burst",
            ),
        ),
    ],
    ids=["silent", "no-ack"],
)
def test_a_peer_that_stops_answering_is_a_clear_peer_error(
    handler: Handler, expected: tuple[str, ...]
) -> None:
    """A bench peer that does not answer a ping, or never acknowledges the
    throughput bytes, ends run_bench with PeerError within reply_timeout."""

    async def scenario() -> str:
        async with running_server() as srv, answer_peer(srv.url, handler):
            with pytest.raises(PeerError) as caught:
                await _bench(srv.url, 0.2, 1024, 1.0)
            return str(caught.value)

    message = run(scenario(), timeout=20)
    assert any(text in message for text in expected), message


def test_serve_bench_gives_up_on_a_silent_caller() -> None:
    """A caller that opens a bench channel and sends nothing has it closed after
    idle_timeout, and the call ends with PeerError (no call held forever)."""

    async def scenario() -> tuple[str, bool]:
        async with running_server() as srv:
            handler: Handler = lambda c: serve_bench(c.channel, idle_timeout=0.5)  # noqa: E731
            async with answer_peer(srv.url, handler, max_calls=1) as serving:
                config = PeerConfig(signal_url=srv.url, ice=ICE, connect_timeout=10)
                async with call(config, "lib", label=BENCH_LABEL) as c:
                    with pytest.raises(PeerError) as caught:
                        await asyncio.wait_for(serving, 10)
                    closed = await asyncio.wait_for(c.channel.closed.wait(), 5)
                return str(caught.value), closed

    message, closed = run(scenario())
    assert "bench caller sent nothing for 0.5 s" in message
    assert closed
