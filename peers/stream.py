"""Chat and pipe workloads: stdin to the data channel, the channel to stdout.

- :func:`chat` sends each line of its source as one text message and hands
  every message received to an ``output`` callback.
- :func:`pipe` copies raw bytes both ways, like netcat: the source to the
  channel as binary messages, the channel to a sink.

**How a session ends** (netcat's semantics). Between two ``rtc-peer`` peers,
the end of one side's input closes that direction only: an end-of-stream
marker (an empty binary message) follows its data, and the other direction
flows on until its own input ends. The channel is closed once both
directions have ended and each end was acknowledged by the peer (one more
empty binary message); the whole handshake is in
:mod:`peers.stream_protocol`. So a receiver whose input is ``/dev/null``
receives everything, and a sender returns only once the receiver has
written out everything before the end. The channel closing before the
peer's end marker (peer killed, channel closed early), or before the peer
acknowledged ours, raises PeerError: a cut stream never looks complete.

With a peer that does not speak the handshake (the Go demo, the browser
page), or when the caller passes no :class:`StreamEnds`, the old rule holds:
the first side whose input ends closes the channel once everything it sent
has been delivered, and a close is the normal end.

**Delivered, then closed.** The channel is closed only once aiortc has handed
every queued message to SCTP (``bufferedAmount`` is 0) and the peer has
acknowledged every chunk (nothing left in SCTP's outbound and sent queues):
aiortc 1.9 sends the stream reset at once and its peer drops what arrives
after it. The close then completes when the peer has reset its direction
too, which we wait for with a timeout.

**Not blocking the event loop.** The source is read by
:mod:`peers.input_reader` (at most a couple of chunks ahead: ``Channel.send``
waits while the channel's buffer is full). Writes to the sink run in a worker
thread, so a slow consumer of stdout does not stall SCTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import BinaryIO

from rtc_signal.peers.channel import Channel, Data
from rtc_signal.peers.errors import ChannelClosed, PeerError
from rtc_signal.peers.input_reader import Reader, open_reader
from rtc_signal.peers.stream_protocol import (
    HELLO_TIMEOUT,
    STREAM_PROTOCOL,
    LineSplitter,
    Received,
    StreamEnds,
)
from rtc_signal.peers.workloads import Output

__all__ = ["STREAM_PROTOCOL", "StreamEnds", "chat", "pipe"]

log = logging.getLogger(__name__)

#: Bytes read from the source at a time; also the pipe's message size, unless
#: the peer announced a smaller max-message-size. 64 KiB is also the size
#: RFC 8841 lets us assume when the peer announces none.
CHUNK = 64 << 10
#: A chat line longer than this (bytes) is sent as several messages. Decoding
#: with replacement may triple invalid bytes; 3 x 16 KiB stays below 64 KiB.
MAX_LINE = 16 << 10
#: Give up waiting for the peer to acknowledge our data after this many
#: seconds without progress (a live peer acknowledges within round trips).
STALL_TIMEOUT = 30.0
#: How long the close handshake (both stream resets) may take once our data
#: has been acknowledged.
CLOSE_TIMEOUT = 10.0
#: How often the acknowledgement of our data is checked while waiting for it
#: (aiortc has no event for it).
POLL_INTERVAL = 0.01


async def chat(
    channel: Channel,
    source: BinaryIO,
    output: Output,
    ends: StreamEnds | None = None,
    peer: str = "the peer",
    on_peer_end: Callable[[], None] | None = None,
) -> None:
    """Send each line of ``source``; ``output`` each message received.

    A line is sent as one text message without its line ending (``\\n`` or
    ``\\r\\n``), decoded as UTF-8 (invalid bytes replaced); a line longer than
    :data:`MAX_LINE` bytes becomes several messages. Binary messages received
    are shown decoded the same way. Both directions run at the same time.

    ``ends`` is this side's end-of-stream handshake
    (``StreamEnds.for_offer()`` or ``StreamEnds.for_answer(channel.dc.protocol)``;
    None: the old close-ends-all rule, see the module docstring). ``peer``
    names the peer in errors; ``on_peer_end`` is called when the peer's input
    has ended (or, without the handshake, when it closed the channel).
    PeerError if the stream was cut or the peer stops acknowledging.
    """

    async def send_lines(reader: Reader) -> None:
        lines = LineSplitter(MAX_LINE)
        while chunk := await reader.read(CHUNK):
            for line in lines.feed(chunk):
                await channel.send(line.decode("utf-8", "replace"))
        last = lines.finish()
        if last is not None:
            await channel.send(last.decode("utf-8", "replace"))

    async def show(message: Data) -> None:
        output(message if isinstance(message, str) else message.decode("utf-8", "replace"))

    await _session(channel, source, ends, send_lines, show, peer, on_peer_end)


async def pipe(
    channel: Channel,
    source: BinaryIO,
    sink: BinaryIO,
    ends: StreamEnds | None = None,
    peer: str = "the peer",
) -> None:
    """Raw bytes: ``source`` -> channel, channel -> ``sink`` (binary-safe).

    ``source`` is sent as binary messages of up to :data:`CHUNK` bytes (less if
    the peer accepts only smaller messages); each message received is written
    to ``sink`` and flushed (a text message as its UTF-8 bytes). Both
    directions run at the same time, each until its own end (with ``ends``,
    as for :func:`chat`). PeerError if the stream was cut, the peer stops
    acknowledging, or ``source`` or ``sink`` fails (a closed stdout, for one).
    """
    size = _message_size(channel)

    async def send_bytes(reader: Reader) -> None:
        while data := await reader.read(size):
            await channel.send(data)

    async def write(message: Data) -> None:
        # Awaiting each write is the only flow control towards stdout
        # (aiortc itself queues whatever arrives).
        await asyncio.to_thread(
            _write, sink, message.encode() if isinstance(message, str) else message
        )

    await _session(channel, source, ends, send_bytes, write, peer, None)


async def _session(
    channel: Channel,
    source: BinaryIO,
    ends: StreamEnds | None,
    send_input: Callable[[Reader], Awaitable[None]],
    deliver: Callable[[Data], Awaitable[None]],
    peer: str,
    on_peer_end: Callable[[], None] | None,
) -> None:
    """Both directions of a chat or pipe session and its end (module docstring)."""
    state = ends if ends is not None else StreamEnds(peer_speaks=False, send_hello=False)
    known = asyncio.Event()  # whether the peer speaks the handshake is known
    we_closed = False

    async def send_side(reader: Reader) -> None:
        nonlocal we_closed
        try:
            await send_input(reader)
            if state.peer_speaks is None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(HELLO_TIMEOUT):
                        await known.wait()
                state.hello_timed_out()
            if state.peer_speaks:
                _send_markers(channel, state.input_ended())
                log.info("end of input: end of stream sent")
                return
        except ChannelClosed:
            log.info("the channel closed before our input ended")
            return
        log.info("end of input: closing once everything sent is delivered")
        we_closed = True
        await close_after_delivery(channel)

    with _plain_peer_error():
        async with open_reader(source) as reader, asyncio.TaskGroup() as tasks:
            _send_markers(channel, state.start())
            if state.peer_speaks is not None:
                known.set()
            sender = tasks.create_task(send_side(reader), name="stream-send")
            async for message in channel:
                kind = state.received(message)
                if state.peer_speaks is not None:
                    known.set()
                if kind is Received.DATA:
                    await deliver(message)
                elif kind is Received.END:
                    log.info("end of stream from %s after %d bytes", peer, state.bytes_received)
                    if on_peer_end is not None:
                        on_peer_end()
                    with contextlib.suppress(ChannelClosed):
                        _send_markers(channel, state.take_ack())
                elif kind is Received.VIOLATION:
                    raise PeerError(
                        f"{peer} broke the end-of-stream handshake: "
                        f"{_describe(message)} after its end of stream"
                    )
                if state.finished:
                    log.info("both directions ended and acknowledged: closing")
                    await close_after_delivery(channel)
            # The channel closed: by the peer, or by us (then the sender has
            # finished, or finishes on this cancel).
            sender.cancel()
    error = state.close_error(peer)
    if error is not None:
        raise PeerError(error)
    if not state.peer_speaks and not we_closed and on_peer_end is not None:
        on_peer_end()  # without the handshake, the peer's close is its end
    log.info("session ended: %d bytes received", state.bytes_received)


def _send_markers(channel: Channel, messages: list[Data]) -> None:
    """Queue handshake markers at once (no backpressure wait for one byte: the
    state change and the queueing must not be split by an await)."""
    for message in messages:
        if channel.closed.is_set() or channel.dc.readyState != "open":
            raise ChannelClosed(f"data channel {channel.label!r} is closed")
        channel.dc.send(message)


def _describe(message: Data) -> str:
    if isinstance(message, str):
        return f"a text message of {len(message)} characters"
    return f"a binary message of {len(message)} bytes" if message else "an empty binary message"


@contextlib.contextmanager
def _plain_peer_error() -> Iterator[None]:
    """Let a PeerError out of a TaskGroup as itself, not inside an
    ExceptionGroup: callers report a PeerError in one line (the CLI, and
    AnswerPeer, which catches PeerError only)."""
    try:
        yield
    except BaseExceptionGroup as group:
        errors, others = group.split(PeerError)
        if errors is None or others is not None:
            raise
        while isinstance(first := errors.exceptions[0], BaseExceptionGroup):
            errors = first
        raise first from None  # its own traceback says where it came from


def _write(sink: BinaryIO, data: bytes) -> None:
    try:
        sink.write(data)
        sink.flush()
    except (OSError, ValueError) as exc:  # ValueError: the sink was closed
        raise PeerError(f"cannot write the data received: {exc}") from exc


def _message_size(channel: Channel) -> int:
    """:data:`CHUNK`, or less if the peer's SDP announced a smaller
    max-message-size (aiortc refuses to send a larger message with ValueError
    and keeps the peer's value privately; 0 means no limit)."""
    remote = getattr(channel.dc.transport, "_remote_max_message_size", 0)
    if isinstance(remote, int) and remote > 0:
        return min(CHUNK, remote)
    return CHUNK


async def close_after_delivery(channel: Channel) -> None:
    """Close the channel once the peer has acknowledged everything we sent.

    Returns quietly if the peer closes the channel first (its input ended
    too). PeerError if our data is not acknowledged (no progress for
    :data:`STALL_TIMEOUT` seconds) or if the peer does not complete the close
    within :data:`CLOSE_TIMEOUT` (then the session could not end cleanly: the
    peer is gone or broken, even if our data did arrive).
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    acknowledged = await _wait_acknowledged(channel)
    log.debug("outgoing data acknowledged after %.3f s", loop.time() - started)
    if channel.closed.is_set():
        return
    await channel.close(CLOSE_TIMEOUT)
    if not channel.closed.is_set():
        delivery = (
            "everything sent was acknowledged"
            if acknowledged
            else "the end of what was sent may not have arrived"
        )
        raise PeerError(
            f"the peer did not complete closing the data channel within "
            f"{CLOSE_TIMEOUT:g} s ({delivery})"
        )
    log.info("data channel closed after %.3f s", loop.time() - started)


async def _wait_acknowledged(channel: Channel) -> bool:
    """Wait until nothing we sent is queued or unacknowledged (or the channel
    closed). True if the acknowledgements could be checked, False if this
    aiortc does not expose its SCTP queues (then only ``bufferedAmount`` is
    waited for, and the close handshake is the proof of delivery)."""
    loop = asyncio.get_running_loop()
    outstanding, checked = _outstanding(channel)
    progress_at = loop.time()
    while outstanding and not channel.closed.is_set():
        if loop.time() - progress_at > STALL_TIMEOUT:
            raise PeerError(
                f"the peer acknowledged nothing for {STALL_TIMEOUT:g} s "
                f"({outstanding} bytes still unacknowledged)"
            )
        await asyncio.sleep(POLL_INTERVAL)
        now, checked = _outstanding(channel)
        if now < outstanding:
            progress_at = loop.time()
        outstanding = now
    return checked


def _outstanding(channel: Channel) -> tuple[int, bool]:
    """Bytes of ours not yet acknowledged by the peer: those still queued in
    the data channel (``bufferedAmount``) and those in SCTP's outbound (not
    sent) and sent (not acknowledged) queues, which aiortc keeps privately
    (for every channel of the association; a call has one). Also whether
    those queues could be read at all."""
    total = int(channel.dc.bufferedAmount)
    sctp = channel.dc.transport
    checked = True
    for name in ("_outbound_queue", "_sent_queue"):
        chunks = getattr(sctp, name, None)
        if chunks is None:
            checked = False
            continue
        total += sum(len(getattr(chunk, "user_data", b"")) for chunk in chunks)
    return total, checked
