"""Receiving files over a data channel labelled ``files`` (``rtc-peer answer
--accept-files DIR``): checks, a temporary file, the verdict (protocol in
:mod:`peers.transfer`).

The receiver writes to ``DIR/.NAME.part-XXXXXXXX`` and moves it to
``DIR/NAME`` only once size and hash match (hard link, so that a file created
meanwhile is never clobbered without ``--overwrite``); the temporary file is
deleted on any failure. Files are written in a worker thread, a block at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import shutil
from pathlib import Path
from typing import IO, Any

from rtc_signal.peers.channel import Channel
from rtc_signal.peers.errors import ChannelClosed, PeerError
from rtc_signal.peers.files import (
    HEADER_TIMEOUT,
    IO_BLOCK,
    REFUSE_LINGER,
    REPLY_TIMEOUT,
    receive_within,
    send_bounded,
)
from rtc_signal.peers.progress import Progress
from rtc_signal.peers.transfer import (
    FREE_SPACE_MARGIN,
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
    error_message,
    human_size,
    parse_message,
    unsafe_name,
)
from rtc_signal.peers.workloads import Output

log = logging.getLogger(__name__)


async def receive_files(
    channel: Channel,
    directory: Path,
    overwrite: bool,
    progress: bool,
    status: Output,
) -> list[FileStats]:
    """Store the files a sender sends into ``directory`` until it says ``done``
    or closes the channel.

    Each file is checked and answered (ok or error). A refused file does not
    end the call (the sender may go on); the first refusal is raised at the end.
    """
    stored: list[FileStats] = []
    first_failure: FileTransferError | None = None
    while True:
        try:
            message = await receive_within(channel, HEADER_TIMEOUT, "waiting for the next file")
        except ChannelClosed:
            break  # the sender hung up between files (e.g. after a refusal)
        except TransferTimeout as exc:
            status(f"rtc-peer: {exc}")
            raise
        try:
            request = parse_message(message, "waiting for a file header")
            if request["type"] == "done":
                break
            if request["type"] != "file":
                raise TransferProtocolError(f"expected a file header, got {request!r:.200}")
            header = FileHeader.from_message(request)
        except TransferProtocolError as exc:
            # Out of step with the sender: say why, let it read that, end the call.
            status(f"rtc-peer: refused: {exc}")
            with contextlib.suppress(PeerError):
                await send_bounded(channel, error_message(None, exc))
            await channel.close()
            raise
        try:
            stored.append(
                await _receive_file(channel, directory, overwrite, header, progress, status)
            )
        except FileTransferError as exc:
            status(f"rtc-peer: {exc}")
            first_failure = first_failure or exc
            if isinstance(exc, TransferProtocolError):
                await channel.close()  # out of step: the sender reads the error, then the close
                break
    if first_failure is not None:
        raise first_failure
    return stored


async def _receive_file(
    channel: Channel,
    directory: Path,
    overwrite: bool,
    header: FileHeader,
    progress: bool,
    status: Output,
) -> FileStats:
    """One file: checks, ``ready``, data into a temporary file, checks, rename,
    verdict. Raises (after telling the sender) what the file was refused for."""
    meter = Progress("received", header, progress, status)
    answered = False
    try:
        reason = unsafe_name(header.name)
        if reason is not None:
            raise UnsafeName(f"unsafe file name: {reason}")
        final = directory / header.name
        _check_destination(final, overwrite)
        _check_free_space(directory, header.size)
        temp, file = await _create_temp(directory, header.name)
        try:
            await send_bounded(channel, dumps_message({"type": "ready", "name": header.name}))
            digest, received, early = await _receive_data(channel, file, header, meter)
            if early is not None:
                answered = True
                raise early
            await _close_file(file)
            if received != header.size:
                raise SizeMismatch(f"{received} bytes received, the header said {header.size}")
            if digest != header.sha256:
                raise HashMismatch(
                    f"the SHA-256 of the data received is {digest}, the header said {header.sha256}"
                )
            await _place(temp, final, overwrite)
        finally:
            with contextlib.suppress(OSError):
                file.close()  # closed already unless something failed
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()  # gone already once placed
        await send_bounded(channel, dumps_message({"type": "ok", "name": header.name}))
        return meter.finish()
    except TransferInterrupted:
        meter.abort()
        raise
    except FileTransferError as exc:
        meter.abort()
        if not answered:
            with contextlib.suppress(PeerError):
                await send_bounded(channel, error_message(header.name, exc))
        # The reason went to the sender as is; here, say which file it was.
        raise type(exc)(f"refused {header.name!r}: {exc}") from exc
    except BaseException:
        meter.abort()
        raise


async def _receive_data(
    channel: Channel, file: IO[bytes], header: FileHeader, meter: Progress
) -> tuple[str, int, FileTransferError | None]:
    """Data messages up to ``eof``, written and hashed a block at a time in a
    worker thread; returns (sha256 hex, bytes received, failure already told).

    A failure while data flows (disk full, too many bytes) is told to the
    sender at once (so that it stops), then the data is drained up to ``eof``
    so that the next header is read in step.
    """
    digest = hashlib.sha256()
    received = 0
    pending: list[bytes] = []
    pending_bytes = 0
    failure: FileTransferError | None = None
    expecting = f"receiving {header.name!r} ({header.size} bytes)"
    while True:
        try:
            message = await receive_within(channel, REPLY_TIMEOUT, expecting)
        except ChannelClosed:
            raise TransferInterrupted(
                f"{header.name!r} not stored: the sender closed the channel after "
                f"{received} of {header.size} bytes"
            ) from None
        if isinstance(message, str):
            request = parse_message(message, expecting)
            if request["type"] != "eof":
                raise TransferProtocolError(f"expected data or eof, got {request!r:.200}")
            break
        received += len(message)
        if failure is not None:
            continue  # draining after an early refusal
        if received > header.size:
            failure = SizeMismatch(f"more than the {header.size} bytes the header said")
        else:
            pending.append(message)
            pending_bytes += len(message)
            if pending_bytes >= IO_BLOCK:
                failure = await _write(file, digest, pending)
                meter.advance(pending_bytes)
                pending, pending_bytes = [], 0
        if failure is not None:
            with contextlib.suppress(PeerError):
                await send_bounded(channel, error_message(header.name, failure))
    if failure is None and pending:
        failure = await _write(file, digest, pending)
        meter.advance(pending_bytes)
        if failure is not None:  # after eof: the verdict is the only answer left
            with contextlib.suppress(PeerError):
                await send_bounded(channel, error_message(header.name, failure))
    return digest.hexdigest(), received, failure


async def _write(file: IO[bytes], digest: Any, chunks: list[bytes]) -> FileTransferError | None:
    def write() -> None:
        for data in chunks:
            file.write(data)
            digest.update(data)

    try:
        await asyncio.to_thread(write)
    except OSError as exc:
        return TransferIOError(f"cannot write the file: {exc.strerror or exc}")
    return None


def _check_destination(final: Path, overwrite: bool) -> None:
    if final.is_symlink() or final.exists():
        if final.is_dir() and not final.is_symlink():
            raise DestinationExists("a directory of that name exists")
        if not overwrite:
            raise DestinationExists("the file exists already (the receiver may use --overwrite)")


async def _create_temp(directory: Path, name: str) -> tuple[Path, IO[bytes]]:
    """``directory/.NAME.part-XXXXXXXX``, created exclusively (mode 0666 less the
    umask, like any new file)."""

    def create() -> tuple[Path, IO[bytes]]:
        for _ in range(10):
            temp = directory / f".{name[:100]}.part-{secrets.token_hex(4)}"
            try:
                return temp, open(temp, "xb")
            except FileExistsError:
                continue
        raise FileExistsError(f"no free temporary name for {name!r}")

    try:
        return await asyncio.to_thread(create)
    except OSError as exc:
        raise TransferIOError(f"cannot create a temporary file: {exc.strerror or exc}") from exc


async def _close_file(file: IO[bytes]) -> None:
    def close() -> None:
        file.flush()
        os.fsync(file.fileno())  # the data is on disk before the name appears
        file.close()

    try:
        await asyncio.to_thread(close)
    except OSError as exc:
        raise TransferIOError(f"cannot write the file: {exc.strerror or exc}") from exc


async def _place(temp: Path, final: Path, overwrite: bool) -> None:
    """Give the verified temporary file its final name."""

    def place() -> None:
        if overwrite:
            os.replace(temp, final)
            return
        try:
            # A hard link fails if the name exists: no file created meanwhile
            # (by another caller, say) is ever replaced.
            os.link(temp, final)
        except FileExistsError:
            raise
        except OSError:  # no hard links on this file system
            if final.is_symlink() or final.exists():
                raise FileExistsError(final) from None
            os.rename(temp, final)
        # the temporary name is removed by the caller

    try:
        await asyncio.to_thread(place)
    except FileExistsError:
        raise DestinationExists(
            "the file appeared while it was being received (the receiver may use --overwrite)"
        ) from None
    except OSError as exc:
        raise TransferIOError(f"cannot store the file: {exc.strerror or exc}") from exc


async def refuse_files(channel: Channel, reason: str) -> None:
    """Tell a sender this peer does not accept files, then wait (a bounded
    time) for it to hang up, so that it reads the refusal before the close."""
    log.info("refusing files: %s", reason)
    with contextlib.suppress(PeerError):
        await send_bounded(channel, error_message(None, FilesRefused(reason)))
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(REFUSE_LINGER):
            await channel.closed.wait()


def _check_free_space(directory: Path, size: int) -> None:
    """TransferIOError unless ``size`` bytes plus :data:`FREE_SPACE_MARGIN` fit
    in ``directory``'s file system (the space an unprivileged user may use)."""
    try:
        free = shutil.disk_usage(directory).free
    except OSError as exc:
        raise TransferIOError(
            f"cannot check the free space of the directory: {exc.strerror or exc}"
        ) from exc
    if size + FREE_SPACE_MARGIN > free:
        raise TransferIOError(
            f"not enough free space: the file is {size} bytes ({human_size(size)}), the "
            f"receiver's directory has {free} bytes ({human_size(free)}) free and keeps "
            f"{human_size(FREE_SPACE_MARGIN)} of it free"
        )
