"""Chat and pipe workloads: stdin to the data channel, the channel to stdout.

- :func:`chat` sends each line of its source as one text message and hands
  every message received to an ``output`` callback.
- :func:`pipe` copies raw bytes both ways, like netcat: the source to the
  channel as binary messages, the channel to a sink.

**How a session ends.** A data channel has no half-close: closing it ends
both directions. So the first side whose input ends closes the channel, once
everything it sent has been delivered; the other side takes that close as the
normal end of the session and returns too (both exit 0 on the command line),
dropping whatever of its own input it had not sent yet (like ``nc -q 0``).
A peer that should only receive therefore needs an input that does not end
early: a terminal, or a pipe kept open (``< /dev/null`` closes at once).
A peer that vanishes without closing (killed) is noticed only when aiortc
gives the connection up (ICE consent expires, about 30 s) and the channel
closes; that looks like a close here, so a receiver cannot tell a cut stream
from a complete one.

**Delivered, then closed.** End of input does not close the channel at once:
we first wait until aiortc has handed every queued message to SCTP
(``bufferedAmount`` is 0) and the peer has acknowledged every chunk (nothing
left in SCTP's outbound and sent queues), and only then close. aiortc 1.16
would also keep the stream reset behind queued data, and its peer applies it
only once every earlier chunk has arrived; but aiortc 1.9 sends the reset at
once and its peer drops what arrives after it (4 MiB queued, then close():
nothing arrived). The close then completes when the peer has reset its
direction too, which we wait for with a timeout.

**Not blocking the event loop.** Pipes and sockets are read by the event loop
itself (``connect_read_pipe``); regular files, terminals and ``/dev/null``
(which epoll refuses, or where a non-blocking descriptor would also make the
terminal's stdout non-blocking) by a daemon thread that reads one chunk only
when asked for one. Either way at most a couple of chunks are read ahead:
``Channel.send`` waits while the channel's buffer is full, and the reading
waits for it. Writes to the sink run in a worker thread, so a slow consumer of
stdout does not stall SCTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import stat
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import BinaryIO, Protocol

from rtc_signal.peers.channel import Channel
from rtc_signal.peers.errors import ChannelClosed, PeerError
from rtc_signal.peers.workloads import Output

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


async def chat(channel: Channel, source: BinaryIO, output: Output) -> None:
    """Send each line of ``source``; ``output`` each message received.

    A line is sent as one text message without its line ending (``\\n`` or
    ``\\r\\n``), decoded as UTF-8 (invalid bytes replaced); a line longer than
    :data:`MAX_LINE` bytes becomes several messages. Binary messages received
    are shown decoded the same way. Both directions run at the same time.

    End of ``source`` closes the channel once everything sent was delivered
    (PeerError if the peer stops acknowledging, see :data:`STALL_TIMEOUT`).
    The remote closing the channel ends it too and is a normal end: reading
    ``source`` stops, lines not sent yet are dropped, and chat returns.
    """

    async def send_lines(reader: _Reader) -> None:
        lines = _LineSplitter(MAX_LINE)
        sent = 0
        try:
            while chunk := await reader.read(CHUNK):
                for line in lines.feed(chunk):
                    await channel.send(line.decode("utf-8", "replace"))
                    sent += 1
            last = lines.finish()
            if last is not None:
                await channel.send(last.decode("utf-8", "replace"))
                sent += 1
        except ChannelClosed:
            log.info("the peer closed the chat before our input ended (%d lines sent)", sent)
            return
        log.info("end of input after %d lines: closing once they are delivered", sent)
        await _close_after_delivery(channel)

    with _plain_peer_error():
        async with _open_reader(source) as reader, asyncio.TaskGroup() as tasks:
            sender = tasks.create_task(send_lines(reader), name="chat-send")
            async for message in channel:
                output(message if isinstance(message, str) else message.decode("utf-8", "replace"))
            # The channel closed: by the peer (stop reading our input) or by us
            # (then the sender has finished, or finishes on this cancel).
            sender.cancel()


async def pipe(channel: Channel, source: BinaryIO, sink: BinaryIO) -> None:
    """Raw bytes: ``source`` -> channel, channel -> ``sink`` (binary-safe).

    ``source`` is sent as binary messages of up to :data:`CHUNK` bytes (less if
    the peer accepts only smaller messages); each message received is written
    to ``sink`` and flushed (a text message as its UTF-8 bytes). Both
    directions run at the same time.

    End of ``source`` closes the channel once everything sent was delivered
    (PeerError if the peer stops acknowledging). The remote closing the
    channel is the normal end for this side: reading ``source`` stops, what
    was not sent yet is dropped, and pipe returns once ``sink`` is flushed.
    PeerError if ``source`` or ``sink`` fails (a closed stdout, for one).
    """
    size = _message_size(channel)

    async def send_bytes(reader: _Reader) -> None:
        sent = 0
        try:
            while data := await reader.read(size):
                await channel.send(data)
                sent += len(data)
        except ChannelClosed:
            log.info("the peer closed the pipe before our input ended (%d bytes sent)", sent)
            return
        log.info("end of input after %d bytes: closing once they are delivered", sent)
        await _close_after_delivery(channel)

    received = 0
    with _plain_peer_error():
        async with _open_reader(source) as reader, asyncio.TaskGroup() as tasks:
            sender = tasks.create_task(send_bytes(reader), name="pipe-send")
            async for message in channel:
                data = message.encode() if isinstance(message, str) else message
                # Awaiting each write is the only flow control towards stdout
                # (aiortc itself queues whatever arrives).
                await asyncio.to_thread(_write, sink, data)
                received += len(data)
            sender.cancel()  # as in chat: the channel closed
    log.info("data channel closed after %d bytes received", received)


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


class _LineSplitter:
    """Cuts a byte stream into lines (without their ``\\n`` or ``\\r\\n``),
    and lines longer than ``limit`` bytes into pieces, so that memory stays
    bounded however long a line is."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._pending = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._pending += data
        lines: list[bytes] = []
        while True:
            end = self._pending.find(b"\n")
            stop = end if end >= 0 else len(self._pending)
            # Without its \r (also a \r still waiting for its \n).
            length = stop - 1 if stop > 0 and self._pending[stop - 1] == 0x0D else stop
            if length > self.limit:  # too long for one message: a piece now
                cut = _utf8_boundary(self._pending, self.limit)
                lines.append(bytes(self._pending[:cut]))
                del self._pending[:cut]
            elif end >= 0:
                lines.append(bytes(self._pending[:length]))
                del self._pending[: end + 1]
            else:
                return lines

    def finish(self) -> bytes | None:
        """The last line if the input did not end with a line ending."""
        if not self._pending:
            return None
        line, self._pending = bytes(self._pending), bytearray()
        return line


def _utf8_boundary(data: bytearray, limit: int) -> int:
    """A cut at most ``limit`` bytes in that does not split a UTF-8 character
    (continuation bytes are 0b10xxxxxx; a character has at most 3 of them)."""
    cut = limit
    while cut > limit - 3 and data[cut] & 0xC0 == 0x80:
        cut -= 1
    return cut


def _message_size(channel: Channel) -> int:
    """:data:`CHUNK`, or less if the peer's SDP announced a smaller
    max-message-size (aiortc refuses to send a larger message with ValueError
    and keeps the peer's value privately; 0 means no limit)."""
    remote = getattr(channel.dc.transport, "_remote_max_message_size", 0)
    if isinstance(remote, int) and remote > 0:
        return min(CHUNK, remote)
    return CHUNK


async def _close_after_delivery(channel: Channel) -> None:
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


# -- reading the source without blocking the event loop -------------------------


class _Reader(Protocol):
    async def read(self, size: int) -> bytes:
        """Up to ``size`` bytes; b"" at the end of the input."""


@contextlib.asynccontextmanager
async def _open_reader(source: BinaryIO) -> AsyncIterator[_Reader]:
    """A reader for ``source`` (see the module docstring), released on exit."""
    try:
        fd: int | None = source.fileno()
    except (OSError, ValueError):  # io.UnsupportedOperation is an OSError
        fd = None
    try:
        mode = os.fstat(fd).st_mode if fd is not None else 0
    except OSError as exc:
        raise PeerError(f"cannot read the input: {exc}") from exc
    if fd is not None and (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        pipe_reader = await _PipeReader.open(fd)
        try:
            yield pipe_reader
        finally:
            pipe_reader.close()
    else:
        # os.read when there is a descriptor, not source.read: a daemon thread
        # blocked inside a buffered read holds the buffer's lock, which makes
        # interpreter shutdown abort ("could not acquire lock ... daemon threads").
        read: Callable[[int], bytes] = (
            _fd_reader(fd) if fd is not None else getattr(source, "read1", source.read)
        )
        thread_reader = _ThreadReader(read, asyncio.get_running_loop())
        try:
            yield thread_reader
        finally:
            thread_reader.close()


def _fd_reader(fd: int) -> Callable[[int], bytes]:
    def read(size: int) -> bytes:
        return os.read(fd, size)

    return read


class _PipeReader:
    """A pipe or socket, read by the event loop (no thread).

    The transport gets a duplicate of the descriptor, so that closing it does
    not close the caller's file; the descriptor's blocking mode, which
    ``connect_read_pipe`` changes for every process sharing the pipe, is put
    back on close.
    """

    def __init__(
        self,
        stream: asyncio.StreamReader,
        transport: asyncio.BaseTransport,
        fd: int,
        blocking: bool,
    ) -> None:
        self._stream = stream
        self._transport = transport
        self._fd = fd
        self._blocking = blocking

    @classmethod
    async def open(cls, fd: int) -> _PipeReader:
        loop = asyncio.get_running_loop()
        blocking = os.get_blocking(fd)
        duplicate = os.fdopen(os.dup(fd), "rb", buffering=0)
        # StreamReader stops reading the pipe beyond 2 x limit buffered bytes.
        stream = asyncio.StreamReader(limit=CHUNK)
        try:
            transport, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(stream), duplicate
            )
        except BaseException:
            duplicate.close()
            os.set_blocking(fd, blocking)
            raise
        return cls(stream, transport, fd, blocking)

    async def read(self, size: int) -> bytes:
        try:
            return await self._stream.read(size)
        except OSError as exc:
            raise PeerError(f"cannot read the input: {exc}") from exc

    def close(self) -> None:
        self._transport.close()
        with contextlib.suppress(OSError):
            os.set_blocking(self._fd, self._blocking)


class _ThreadReader:
    """Reads with a blocking ``read`` in a daemon thread, one chunk per call
    of :meth:`read` (so nothing is read ahead of what the channel takes).

    A daemon thread, not the default executor: a terminal read may block
    until the user types, and ``asyncio.run`` joins executor threads on exit.
    After :meth:`close` the thread ends as soon as its current read returns.
    """

    def __init__(self, read: Callable[[int], bytes], loop: asyncio.AbstractEventLoop) -> None:
        self._read = read
        self._loop = loop
        self._requests: queue.SimpleQueue[tuple[int, asyncio.Future[bytes]] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._run, name="stdin-reader", daemon=True)
        self._thread.start()

    async def read(self, size: int) -> bytes:
        result: asyncio.Future[bytes] = self._loop.create_future()
        self._requests.put((size, result))
        return await result

    def close(self) -> None:
        self._requests.put(None)

    def _run(self) -> None:
        while (request := self._requests.get()) is not None:
            size, result = request
            try:
                data = self._read(size)
            except (OSError, ValueError) as exc:
                self._deliver(result, None, PeerError(f"cannot read the input: {exc}"))
            else:
                self._deliver(result, data, None)

    def _deliver(
        self, result: asyncio.Future[bytes], data: bytes | None, error: BaseException | None
    ) -> None:
        def settle() -> None:
            if result.done():  # the reader was cancelled meanwhile
                return
            if error is not None:
                result.set_exception(error)
            else:
                result.set_result(data or b"")

        with contextlib.suppress(RuntimeError):  # the event loop is closed: nobody waits
            self._loop.call_soon_threadsafe(settle)
