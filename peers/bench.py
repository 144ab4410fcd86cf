"""The built-in benchmark over a data channel labelled ``bench``.

``rtc-peer bench`` (:func:`run_bench`, offer side) measures a call to any
``rtc-peer answer``, which runs :func:`serve_bench` on every channel labelled
``bench`` whatever its own mode. Three figures:

- **setup**: offer sent -> data channel open (:attr:`Call.setup_seconds`);
- **RTT**: p50 and p99 of sequential 32-byte ping-pongs;
- **throughput** of the reliable ordered channel, in MB/s (MB = 10^6 bytes):
  ``size``-byte binary messages sent for ``seconds`` seconds through
  :meth:`Channel.send` (so with its backpressure), timed from the first send
  until the receiver acknowledges the bytes it counted: delivered bytes, not
  bytes queued in aiortc.

Protocol on the ``bench`` channel (offer side = client, answer side = server):

- A **binary** message is throughput data: the server adds its length to a
  counter, and replies nothing.
- A **text** message is a JSON object with an ``op``; the server answers
  each one, in order:

  - ``{"op":"ping","n":<int>}`` padded with spaces to exactly 32 bytes ->
    the same text back, verbatim (the pong);
  - ``{"op":"throughput","bytes":<N>}``, N = bytes the client sent since its
    previous marker -> ``{"op":"received","bytes":<M>}``, M = bytes the
    server counted since its previous reply (the counter restarts). The
    channel is reliable and ordered, so a marker arrives after every data
    byte sent before it and its reply proves delivery; the client requires
    M == N;
  - anything else -> ``{"op":"error","message":<str>}``.
- The client closes the channel when done; the server returns once it is
  closed (it also gives up, closing it, after ``idle_timeout`` seconds
  without a message).

Run order: 10 warm-up pings, then up to 500 timed ones (fewer, but at least
200, once ``seconds`` have passed), then the throughput burst. The pings go
first so that a peer that does not speak this protocol is found before
megabytes are sent to it. During the burst the client sends a marker after
every 256 KiB (or 1,024 messages, for small ones) and keeps at most 8 markers
unacknowledged: without that window, up to ``Channel.high_water`` bytes of
tiny messages (a million 1-byte ones) could be queued when the burst ends,
and delivering them would take the receiver far longer than the burst. The
throughput is the acknowledged bytes over the time from the first send to
the last acknowledgement.

Every wait is bounded by ``reply_timeout`` (a reply, or the burst's end
being held up by a peer that takes no more data): a peer that stops
answering is a :class:`PeerError` saying what it did not answer.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass
from typing import Any

from rtc_signal.peers.channel import Channel, Data
from rtc_signal.peers.errors import ChannelClosed, PeerError
from rtc_signal.peers.session import Call

log = logging.getLogger(__name__)

BENCH_LABEL = "bench"
PING_SIZE = 32
RTT_WARMUP = 10
RTT_MIN = 200
RTT_MAX = 500
#: a throughput marker after this many bytes (or MARKER_MESSAGES messages) ...
MARKER_BYTES = 256 << 10
MARKER_MESSAGES = 1024
#: ... and at most this many markers unacknowledged: the application-level
#: window that keeps the backlog at the burst's end small, whatever the size
WINDOW = 8
#: seconds for any one reply (pong, throughput acknowledgement) or stalled send
REPLY_TIMEOUT = 10.0
#: the answer side gives up on a bench caller silent for this long
IDLE_TIMEOUT = 60.0
#: RFC 8841: what a peer accepts when its SDP has no a=max-message-size
DEFAULT_MAX_MESSAGE_SIZE = 65536
_MAX_MESSAGE_SIZE = re.compile(r"^a=max-message-size:(\d+)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class BenchResult:
    """The four figures of one bench (and what they were measured with)."""

    setup_ms: float
    throughput_MBps: float  # the JSON key the issue asks for
    rtt_p50_ms: float
    rtt_p99_ms: float
    #: what the figures were measured with (for the table; not in the JSON)
    size: int = 0
    delivered_bytes: int = 0
    transfer_seconds: float = 0.0
    round_trips: int = 0

    def as_json(self) -> dict[str, Any]:
        """Exactly the four figures (the ``--json`` output)."""
        return {
            "setup_ms": round(self.setup_ms, 3),
            "throughput_MBps": round(self.throughput_MBps, 3),
            "rtt_p50_ms": round(self.rtt_p50_ms, 3),
            "rtt_p99_ms": round(self.rtt_p99_ms, 3),
        }

    def table(self) -> str:
        """A small human-readable table of the four figures and how they were taken."""
        rows = [
            ("setup (offer sent -> channel open)", f"{self.setup_ms:.1f} ms"),
            ("throughput (MB = 10^6 bytes)", f"{self.throughput_MBps:.2f} MB/s"),
            ("RTT p50 (32-byte ping)", f"{self.rtt_p50_ms:.3f} ms"),
            ("RTT p99 (32-byte ping)", f"{self.rtt_p99_ms:.3f} ms"),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [f"{name:<{width}}  {value:>12}" for name, value in rows]
        lines.append(
            f"throughput: {self.delivered_bytes:,} bytes in {self.size:,}-byte messages on "
            f"the reliable ordered channel,\n  acknowledged by the receiver "
            f"{self.transfer_seconds:.2f} s after the first was sent; "
            f"RTT: {self.round_trips} round trips"
        )
        return "\n".join(lines)


def _ping(n: int) -> str:
    # Spaces after the JSON object are legal JSON and pad every ping to the
    # same size, so the RTT figure is for 32-byte messages whatever n is.
    return f'{{"op":"ping","n":{n}}}'.ljust(PING_SIZE)


def _percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending, non-empty list."""
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def remote_max_message_size(call: Call) -> int:
    """The largest message the remote peer accepts (0: no limit), from its SDP."""
    description = call.pc.remoteDescription
    match = _MAX_MESSAGE_SIZE.search(description.sdp if description is not None else "")
    return int(match.group(1)) if match else DEFAULT_MAX_MESSAGE_SIZE


class _Client:
    """The offer side of the protocol on one call."""

    def __init__(self, call: Call, reply_timeout: float) -> None:
        self.channel = call.channel
        self.remote = call.remote_id
        self.reply_timeout = reply_timeout

    async def reply(self, waiting_for: str) -> Data:
        """The next message from the peer, within ``reply_timeout``."""
        try:
            async with asyncio.timeout(self.reply_timeout):
                return await self.channel.receive()
        except TimeoutError:
            raise PeerError(
                f"{self.remote!r} did not answer {waiting_for} within {self.reply_timeout:g} s"
            ) from None
        except ChannelClosed:
            raise ChannelClosed(
                f"{self.remote!r} closed the bench channel while we waited for {waiting_for}"
            ) from None

    def unexpected(self, message: Data, waiting_for: str) -> PeerError:
        """The error for a reply that is not what the protocol says."""
        if isinstance(message, str):
            with_op = _control(message)
            if with_op is not None and with_op.get("op") == "error":
                return PeerError(f"{self.remote!r} refused the bench: {with_op.get('message')}")
        return PeerError(
            f"{self.remote!r} does not speak the bench protocol: got {message!r:.80} "
            f"while waiting for {waiting_for}"
        )

    async def round_trips(self, budget: float) -> list[float]:
        """RTT_WARMUP untimed pings, then the timed ones (seconds, sorted)."""
        samples: list[float] = []
        started = time.perf_counter()
        for n in range(RTT_WARMUP + RTT_MAX):
            ping = _ping(n)
            t0 = time.perf_counter()
            await self.channel.send(ping)
            pong = await self.reply(f"ping {n}")
            t1 = time.perf_counter()
            if pong != ping:
                raise self.unexpected(pong, f"the echo of ping {n}")
            if n >= RTT_WARMUP:
                samples.append(t1 - t0)
                if len(samples) >= RTT_MIN and t1 - started > budget:
                    break
        samples.sort()
        return samples

    async def acknowledged(self, expected: int) -> int:
        """Wait for the reply to the oldest marker in flight: ``expected`` bytes."""
        waiting_for = f"the acknowledgement of {expected:,} bytes"
        reply = await self.reply(waiting_for)
        control = _control(reply) if isinstance(reply, str) else None
        if control is None or control.get("op") != "received":
            raise self.unexpected(reply, waiting_for)
        received = control.get("bytes")
        if received != expected:
            raise PeerError(f"{self.remote!r} received {received!r} bytes of {expected:,} sent")
        return expected

    async def throughput(self, seconds: float, size: int) -> tuple[int, float]:
        """Send ``size``-byte messages for ``seconds``; (bytes the peer
        acknowledged, seconds from the first send to the last acknowledgement)."""
        data = os.urandom(size)  # random: nothing on the path can compress it
        group = max(1, min(MARKER_MESSAGES, MARKER_BYTES // size))
        in_flight: collections.deque[int] = collections.deque()  # bytes per marker
        sent = acked = 0
        started = time.perf_counter()
        stop = started + seconds
        # The loop stops by itself soon after ``stop``; only a peer that
        # stopped taking data (a send held by backpressure, or an
        # acknowledgement that does not come) can keep it up to this deadline.
        try:
            async with asyncio.timeout(seconds + self.reply_timeout):
                while time.perf_counter() < stop:
                    for _ in range(group):
                        await self.channel.send(data)
                    sent += group * size
                    in_flight.append(group * size)
                    await self.channel.send(_dumps({"op": "throughput", "bytes": group * size}))
                    if len(in_flight) >= WINDOW:
                        acked += await self.acknowledged(in_flight.popleft())
        except TimeoutError:
            raise PeerError(
                f"{self.remote!r} stopped taking data: still blocked {self.reply_timeout:g} s "
                f"after the {seconds:g} s burst ({sent:,} bytes sent, {acked:,} acknowledged)"
            ) from None
        except ChannelClosed:
            raise ChannelClosed(
                f"{self.remote!r} closed the bench channel after {sent:,} bytes sent"
            ) from None
        while in_flight:  # each reply within reply_timeout
            acked += await self.acknowledged(in_flight.popleft())
        return acked, time.perf_counter() - started


async def run_bench(
    call: Call, seconds: float, size: int, reply_timeout: float = REPLY_TIMEOUT
) -> BenchResult:
    """Measure ``call`` (a channel labelled ``bench``), then close the channel.

    ``seconds`` is the throughput burst's length (and the RTT phase's budget
    past its first RTT_MIN round trips); ``size`` the burst's message size.
    """
    if seconds <= 0 or size < 1:
        raise ValueError(f"need seconds > 0 and size >= 1 (got {seconds}, {size})")
    limit = remote_max_message_size(call)
    if limit and size > limit:
        raise PeerError(
            f"message size {size:,} is larger than {call.remote_id!r} accepts ({limit:,} bytes)"
        )
    client = _Client(call, reply_timeout)
    rtts = await client.round_trips(seconds)
    delivered, elapsed = await client.throughput(seconds, size)
    # The close follows the data (SCTP stream reset): the answer side's
    # serve_bench sees it and returns.
    await call.channel.close()
    result = BenchResult(
        setup_ms=call.setup_seconds * 1e3,
        throughput_MBps=delivered / elapsed / 1e6,
        rtt_p50_ms=_percentile(rtts, 0.50) * 1e3,
        rtt_p99_ms=_percentile(rtts, 0.99) * 1e3,
        size=size,
        delivered_bytes=delivered,
        transfer_seconds=elapsed,
        round_trips=len(rtts),
    )
    log.info("bench against %r: %s", call.remote_id, result.as_json())
    return result


def _dumps(control: dict[str, Any]) -> str:
    return json.dumps(control, separators=(",", ":"))


def _control(text: str) -> dict[str, Any] | None:
    """A control message's JSON object, or None if it is not one."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


async def serve_bench(channel: Channel, idle_timeout: float = IDLE_TIMEOUT) -> None:
    """The answer side: echo pings, count throughput bytes and report them,
    until the caller closes the channel.

    A caller silent for ``idle_timeout`` seconds gets its channel closed and
    the call ends with PeerError (so no call is held forever).
    """
    loop = asyncio.get_running_loop()
    received = pings = total = 0
    try:
        # One deadline moved on every message: far cheaper than a wait_for
        # per message when the messages are small and many.
        async with asyncio.timeout_at(loop.time() + idle_timeout) as idle:
            while True:
                message = await channel.receive()
                idle.reschedule(loop.time() + idle_timeout)
                if isinstance(message, bytes):
                    received += len(message)
                    continue
                control = _control(message)
                op = control.get("op") if control is not None else None
                if op == "ping":
                    pings += 1
                    await channel.send(message)
                elif op == "throughput":
                    await channel.send(_dumps({"op": "received", "bytes": received}))
                    total += received
                    received = 0
                else:
                    log.warning("bench caller sent %r", message[:80])
                    error = f"not a bench control message: {message!r:.60}"
                    await channel.send(_dumps({"op": "error", "message": error}))
    except ChannelClosed:
        pass  # the caller closed the channel: the bench is over
    except TimeoutError:
        await channel.close()
        raise PeerError(
            f"bench caller sent nothing for {idle_timeout:g} s; closed the channel"
        ) from None
    log.info("bench done: %d pings echoed, %d bytes received", pings, total + received)
