"""Sending files over a data channel labelled ``files`` (``rtc-peer send``),
and the channel helpers the receiver (:mod:`peers.file_receiver`) shares.

The protocol (messages, codes, exit statuses, name rules) is described and
implemented without I/O in :mod:`peers.transfer`; its names are re-exported
here. Chunks are sized to the remote's max message size, capped at
:data:`MAX_CHUNK`; sending waits on the channel's buffered amount
(:meth:`Channel.send`); files are read in a worker thread, a block at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

from rtc_signal.peers.channel import Channel, Data
from rtc_signal.peers.errors import ChannelClosed
from rtc_signal.peers.progress import Progress
from rtc_signal.peers.transfer import (
    ERRORS_BY_CODE,
    FILES_LABEL,
    FREE_SPACE_MARGIN,
    NAME_MAX,
    DestinationExists,
    FileHeader,
    FilesRefused,
    FileStats,
    FileTransferError,
    HashMismatch,
    SizeMismatch,
    TransferInterrupted,
    TransferIOError,
    TransferProtocolError,
    TransferTimeout,
    UnsafeName,
    dumps_message,
    error_from,
    parse_message,
    unsafe_name,
)
from rtc_signal.peers.workloads import Output

__all__ = [
    "ERRORS_BY_CODE",
    "FILES_LABEL",
    "FREE_SPACE_MARGIN",
    "MAX_CHUNK",
    "NAME_MAX",
    "DestinationExists",
    "FileHeader",
    "FileStats",
    "FileTransferError",
    "FilesRefused",
    "HashMismatch",
    "SizeMismatch",
    "TransferIOError",
    "TransferInterrupted",
    "TransferProtocolError",
    "TransferTimeout",
    "UnsafeName",
    "chunk_size",
    "describe_file",
    "send_file",
    "send_files",
    "unsafe_name",
]

log = logging.getLogger(__name__)

#: Upper bound for one data message. Measured with aiortc over loopback (50 MB,
#: 16 KiB to 256 KiB): from 64 KiB up the rate is the same within noise, 16 KiB
#: is ~10% slower; SCTP cuts every message into ~1.2 kB chunks anyway. 64 KiB
#: is also what RFC 8841 lets us assume of any remote, and keeps the
#: receiver's reassembly buffers small.
MAX_CHUNK = 64 * 1024
#: What RFC 8841 says to assume when the remote advertises no max-message-size.
DEFAULT_REMOTE_MAX_MESSAGE_SIZE = 64 * 1024
#: Bytes read from (sent side) or written to (received side) the disk per
#: worker-thread call: big enough that the thread hop is cheap, small enough
#: that little is held in memory.
IO_BLOCK = 1 << 20
#: Longest wait for one protocol step (ready, verdict) or for the next data message.
REPLY_TIMEOUT = 60.0
#: Longest wait for the next header: the sender hashes each file before
#: announcing it (10 min is ~60 GB read at 100 MB/s).
HEADER_TIMEOUT = 600.0
#: Longest a send may wait for the buffered amount to drain (a stalled peer).
STALL_TIMEOUT = 60.0
#: How long a refusing peer waits for the sender to read its refusal and hang up.
REFUSE_LINGER = 10.0


async def receive_within(channel: Channel, timeout: float, expecting: str) -> Data:
    try:
        async with asyncio.timeout(timeout):
            return await channel.receive()
    except TimeoutError:
        raise TransferTimeout(
            f"nothing from the peer for {timeout:g} s while {expecting}"
        ) from None


async def send_bounded(channel: Channel, data: Data) -> None:
    """Channel.send (which waits on the buffered amount), bounded by STALL_TIMEOUT."""
    try:
        async with asyncio.timeout(STALL_TIMEOUT):
            await channel.send(data)
    except TimeoutError:
        raise TransferTimeout(
            f"the peer read nothing for {STALL_TIMEOUT:g} s "
            f"({channel.dc.bufferedAmount} bytes waiting to be sent)"
        ) from None


def chunk_size(channel: Channel, cap: int = MAX_CHUNK) -> int:
    """The data message size for ``channel``: the remote's max message size
    (its SDP's ``a=max-message-size``; 0 means unlimited), at most ``cap``."""
    transport = channel.dc.transport
    # aiortc 1.16 keeps the remote's value private; prefer a public name if a
    # later version adds one.
    remote = getattr(transport, "remoteMaxMessageSize", None)
    if remote is None:
        remote = getattr(transport, "_remote_max_message_size", DEFAULT_REMOTE_MAX_MESSAGE_SIZE)
    limit = int(remote) if remote else cap
    return max(1, min(cap, limit))


# -- reading files (sender) -----------------------------------------------------------


@contextlib.asynccontextmanager
async def _opened(path: Path, mode: str) -> AsyncIterator[IO[bytes]]:
    """A binary file opened in a worker thread; TransferIOError if that fails."""
    try:
        file: IO[bytes] = await asyncio.to_thread(open, path, mode)
    except OSError as exc:
        raise TransferIOError(f"cannot open {str(path)!r}: {exc.strerror or exc}") from exc
    try:
        yield file
    finally:
        file.close()


def _read_hashing(file: IO[bytes], digest: Any, size: int) -> int:
    """Read up to ``size`` bytes into ``digest`` (in a worker thread; hashlib
    releases the GIL, so the event loop keeps running)."""
    block = file.read(size)
    digest.update(block)
    return len(block)


async def describe_file(path: Path, name: str | None = None) -> FileHeader:
    """The header for ``path``: its name (or ``name``), size and SHA-256, read
    in a worker thread a block at a time (cancellable between blocks)."""
    digest = hashlib.sha256()
    size = 0
    async with _opened(path, "rb") as file:
        try:
            while n := await asyncio.to_thread(_read_hashing, file, digest, IO_BLOCK * 4):
                size += n
        except OSError as exc:
            raise TransferIOError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from exc
    return FileHeader(name if name is not None else path.name, size, digest.hexdigest())


# -- sending -------------------------------------------------------------------------


async def send_files(
    channel: Channel,
    paths: list[Path],
    progress: bool,
    status: Output,
    *,
    max_chunk: int = MAX_CHUNK,
) -> list[FileStats]:
    """Send ``paths`` (stored under their base names), one after the other,
    then ``done`` and close the channel.

    Raises at the first file refused (the FileTransferError subclass for its
    code) or failing locally; files before it were stored.
    """
    names: dict[str, Path] = {}
    for path in paths:
        reason = unsafe_name(path.name)
        if reason is not None:  # fail before sending anything, as the receiver would
            raise UnsafeName(f"cannot send {str(path)!r}: {reason}")
        if not path.is_file():  # a FIFO or a device could be read forever
            raise TransferIOError(f"cannot send {str(path)!r}: not a regular file")
        if path.name in names:
            raise UnsafeName(
                f"{str(names[path.name])!r} and {str(path)!r} have the same name: "
                "the receiver stores files under their base names"
            )
        names[path.name] = path
    results = []
    for path in paths:
        header = await describe_file(path)
        results.append(
            await send_file(channel, path, header, progress, status, max_chunk=max_chunk)
        )
    await send_bounded(channel, dumps_message({"type": "done"}))
    await channel.close()
    return results


async def send_file(
    channel: Channel,
    path: Path,
    header: FileHeader,
    progress: bool = False,
    status: Output | None = None,
    *,
    max_chunk: int = MAX_CHUNK,
) -> FileStats:
    """Announce ``header`` and send at most ``header.size`` bytes of ``path``;
    return when the receiver stored the file, raise what it refused it for.

    The header is sent as given (not checked against the file): a library user
    (or a test) can send one that does not match.
    """
    meter = Progress("sent", header, progress, status or log.info)
    try:
        try:
            await send_bounded(channel, header.to_message())
            reply = parse_message(
                await receive_within(
                    channel, REPLY_TIMEOUT, f"waiting for {header.name!r} to be accepted"
                ),
                "waiting for ready",
            )
            if reply["type"] == "error":
                raise error_from(reply)
            if reply["type"] != "ready":
                raise TransferProtocolError(
                    f"expected ready for {header.name!r}, got {reply!r:.200}"
                )
            await _stream(channel, path, header, meter, chunk_size(channel, max_chunk))
        except ChannelClosed as exc:
            await _raise_refusal_if_any(channel)
            raise TransferInterrupted(
                f"the data channel closed while sending {header.name!r} "
                f"({meter.done} of {header.size} bytes sent): the receiver went away"
            ) from exc
        return meter.finish()
    except BaseException:
        meter.abort()
        raise


async def _stream(
    channel: Channel, path: Path, header: FileHeader, meter: Progress, chunk: int
) -> None:
    """The data, ``eof`` and the verdict of one accepted file.

    The receiver may refuse while data flows (disk full...): a pending receive
    runs alongside, checked after every block, so that sending stops early.
    """
    verdict = asyncio.ensure_future(channel.receive())
    try:
        remaining = header.size
        async with _opened(path, "rb") as file:
            while remaining > 0 and not verdict.done():
                try:
                    block = await asyncio.to_thread(file.read, min(IO_BLOCK, remaining))
                except OSError as exc:
                    raise TransferIOError(
                        f"cannot read {str(path)!r}: {exc.strerror or exc}"
                    ) from exc
                if not block:  # shorter than announced: the receiver reports the mismatch
                    break
                remaining -= len(block)
                for start in range(0, len(block), chunk):
                    await send_bounded(channel, block[start : start + chunk])
                meter.advance(len(block))
        if not verdict.done():
            await send_bounded(channel, dumps_message({"type": "eof"}))
        try:
            async with asyncio.timeout(REPLY_TIMEOUT):
                message = await verdict
        except TimeoutError:
            raise TransferTimeout(
                f"no verdict on {header.name!r} within {REPLY_TIMEOUT:g} s"
            ) from None
    finally:
        verdict.cancel()
        with contextlib.suppress(asyncio.CancelledError, ChannelClosed):
            await verdict
    reply = parse_message(message, f"waiting for the verdict on {header.name!r}")
    if reply["type"] == "error":
        raise error_from(reply)
    if reply["type"] != "ok":
        raise TransferProtocolError(f"expected ok for {header.name!r}, got {reply!r:.200}")


async def _raise_refusal_if_any(channel: Channel) -> None:
    """The channel closed under the sender: raise the refusal it carried last,
    if any (a peer that refuses files says so, then hangs up)."""
    with contextlib.suppress(ChannelClosed, TransferTimeout, TransferProtocolError):
        while True:  # the inbox holds what arrived before the close, then ends
            message = parse_message(
                await receive_within(channel, 1.0, "reading the refusal"), "closing"
            )
            if message["type"] == "error":
                raise error_from(message)
