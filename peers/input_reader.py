"""Reading stdin (or any binary source) without blocking the event loop.

Pipes and sockets are read by the event loop itself (``connect_read_pipe``);
regular files, terminals and ``/dev/null`` (which epoll refuses, or where a
non-blocking descriptor would also make the terminal's stdout non-blocking)
by a daemon thread that reads one chunk only when asked for one. Either way
at most a couple of chunks are read ahead: the caller asks for the next chunk
only when the channel took the last one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import stat
import threading
from collections.abc import AsyncIterator, Callable
from typing import BinaryIO, Protocol

from rtc_signal.peers.errors import PeerError

#: The most a pipe reader buffers ahead (asyncio's StreamReader stops reading
#: beyond twice this).
READ_AHEAD = 64 << 10


class Reader(Protocol):
    async def read(self, size: int) -> bytes:
        """Up to ``size`` bytes; b"" at the end of the input."""


@contextlib.asynccontextmanager
async def open_reader(source: BinaryIO) -> AsyncIterator[Reader]:
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
        stream = asyncio.StreamReader(limit=READ_AHEAD)
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
