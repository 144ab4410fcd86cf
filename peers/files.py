"""File transfer over a data channel labelled ``files``.

``rtc-peer send FILE...`` (the offer side) sends files to ``rtc-peer answer
--accept-files DIR`` (the answer side), one after the other, each checked by
name, size and SHA-256.

Protocol
--------

Control messages are JSON text messages with a ``type``; file data travels in
binary messages. The channel is reliable and ordered, so the two never mix up.
Per file::

    sender                                         receiver
    {"type": "file", "name": N, "size": S,   -->
     "sha256": HEX}
                                             <--   {"type": "ready", "name": N}
                                                   or a refusal (see below)
    binary chunks, S bytes in all            -->
    {"type": "eof"}                          -->
                                             <--   {"type": "ok", "name": N}
                                                   or {"type": "error", "name": N,
                                                       "code": C, "reason": R}

and after the last file ``{"type": "done"}`` from the sender, which then
closes the channel.

- ``name`` is a bare, visible file name (:func:`unsafe_name`): the receiver
  refuses with code ``unsafe-name`` a name that is empty, ``.`` or ``..``,
  holds a ``/``, ``\\`` or NUL, is longer than 255 bytes (UTF-8), starts with
  ``.`` (hidden files such as ``.bashrc``, and names shaped like its own
  temporary files ``.NAME.part-XXXXXXXX``), or holds a control or format
  character (Unicode categories Cc and Cf: newlines, bidirectional overrides
  and isolates such as U+202E, zero-width characters; also the line and
  paragraph separators U+2028/U+2029), which could disguise a name in a
  listing or a log. It refuses an existing file unless it runs with
  ``--overwrite`` (``exists``), and a file larger than the free space of its
  directory less :data:`FREE_SPACE_MARGIN` (``io-error``).
- The receiver says ``ready`` (or refuses) before any data is sent, so that a
  refused file costs one round trip, not its whole size.
- A refusal may also come while data is still flowing (``io-error`` when the
  disk is full, ``size-mismatch`` when more than ``size`` bytes arrive); the
  receiver then discards data up to ``eof`` and sends nothing more for that
  file. The sender watches for it and stops early.
- After ``eof`` the receiver checks the size (``size-mismatch``) and the
  SHA-256 of what it received (``hash-mismatch``).
- The sender stops at the first refusal; the receiver keeps reading headers
  until ``done`` or the channel closes (another sender may go on with its
  next file).
- A peer that does not accept files sends ``{"type": "error", "name": null,
  "code": "not-accepting", "reason": R}`` as soon as the channel opens
  (:func:`refuse_files`); ``protocol`` answers a message that breaks these
  rules (the receiver then closes the channel), ``timeout`` a sender that
  went silent (:data:`REPLY_TIMEOUT`, :data:`HEADER_TIMEOUT` between files).
- A channel that closes in the middle of a file fails it on both sides
  (``interrupted``, nothing is sent).

Each code has its own exception class and CLI exit status (see
:data:`ERRORS_BY_CODE`), raised on both sides: the sender exits with it, the
answer peer logs it and keeps serving other callers. Exit statuses: 3
refused (``not-accepting`` or a code we do not know), 4 ``unsafe-name``, 5
``exists``, 6 ``size-mismatch``, 7 ``hash-mismatch``, 8 ``io-error``, 9
``protocol``, 10 ``timeout``, 11 ``interrupted``.

The receiver writes to ``DIR/.NAME.part-XXXXXXXX`` and moves it to
``DIR/NAME`` only once size and hash match (hard link, so that a file created
meanwhile is never clobbered without ``--overwrite``); the temporary file is
deleted on any failure. Chunks are sized to the remote's max message size,
capped at :data:`MAX_CHUNK`; sending waits on the channel's buffered amount
(:meth:`Channel.send`); files are read and written in a worker thread, a block
at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import sys
import time
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ClassVar, TextIO

from rtc_signal.peers.channel import Channel, Data
from rtc_signal.peers.errors import ChannelClosed, PeerError
from rtc_signal.peers.workloads import Output

log = logging.getLogger(__name__)

FILES_LABEL = "files"

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
NAME_MAX = 255
#: Free space a file must leave in the receiver's directory (file-system
#: overhead, and a disk never filled to the last byte by a caller).
FREE_SPACE_MARGIN = 1 << 20
#: What a receiver's temporary file is called: ``.NAME.part-XXXXXXXX``.
_TEMP_NAME = re.compile(r"\..*\.part-[0-9a-f]{8}", re.DOTALL)
#: Unicode categories refused in names: control (Cc), format (Cf: bidi
#: overrides and isolates, LRM/RLM, zero-width characters, soft hyphen...),
#: line and paragraph separators (Zl, Zp).
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})


# -- errors ------------------------------------------------------------------------


class FileTransferError(PeerError):
    """A file was refused or could not be transferred.

    ``code`` is the protocol's code for it (``error`` messages), ``exit_code``
    the CLI's exit status.
    """

    code: ClassVar[str] = "refused"
    exit_code = 3


class FilesRefused(FileTransferError):
    """The peer refused the file for a reason of its own (e.g. it does not accept files)."""

    code = "not-accepting"
    exit_code = 3


class UnsafeName(FileTransferError):
    """The name could leave the receiver's directory (``../x``, ``/x``, ``a/b``, NUL...)."""

    code = "unsafe-name"
    exit_code = 4


class DestinationExists(FileTransferError):
    """A file of that name exists already (and ``--overwrite`` was not given)."""

    code = "exists"
    exit_code = 5


class SizeMismatch(FileTransferError):
    """The bytes received are not as many as the header announced."""

    code = "size-mismatch"
    exit_code = 6


class HashMismatch(FileTransferError):
    """The SHA-256 of the bytes received is not the header's."""

    code = "hash-mismatch"
    exit_code = 7


class TransferIOError(FileTransferError):
    """Reading (sender) or writing (receiver) a file failed: permissions, disk full..."""

    code = "io-error"
    exit_code = 8


class TransferProtocolError(FileTransferError):
    """The other side broke the file protocol (or does not speak it)."""

    code = "protocol"
    exit_code = 9


class TransferTimeout(FileTransferError):
    """The other side did not answer or stopped reading within the timeout."""

    code = "timeout"
    exit_code = 10


class TransferInterrupted(FileTransferError, ChannelClosed):
    """The data channel closed in the middle of a file (the other side went
    away or was interrupted). Never sent: there is nobody left to tell."""

    code = "interrupted"
    exit_code = 11


#: Protocol code -> the exception raised for it (on both sides).
ERRORS_BY_CODE: dict[str, type[FileTransferError]] = {
    cls.code: cls
    for cls in (
        FilesRefused,
        UnsafeName,
        DestinationExists,
        SizeMismatch,
        HashMismatch,
        TransferIOError,
        TransferProtocolError,
        TransferTimeout,
    )
}


# -- messages --------------------------------------------------------------------


@dataclass(frozen=True)
class FileHeader:
    """What the sender announces before a file's data."""

    name: str
    size: int
    sha256: str

    def to_message(self) -> str:
        return _dumps({"type": "file", "name": self.name, "size": self.size, "sha256": self.sha256})

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> FileHeader:
        """The header in a ``file`` message; TransferProtocolError if malformed."""
        name, size, digest = message.get("name"), message.get("size"), message.get("sha256")
        if not isinstance(name, str):
            raise TransferProtocolError(f"file header without a string name: {message!r:.200}")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise TransferProtocolError(f"file header for {name!r} with a bad size: {size!r:.50}")
        if not isinstance(digest, str) or len(digest) != 64 or not _is_hex(digest):
            raise TransferProtocolError(
                f"file header for {name!r} with a bad sha256 (64 hex digits expected)"
            )
        return cls(name, size, digest.lower())


@dataclass(frozen=True)
class FileStats:
    """One file transferred."""

    name: str
    size: int
    seconds: float

    @property
    def mb_per_s(self) -> float:
        """Throughput in MB/s (10^6 bytes), from the header to the verdict."""
        return self.size / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def summary(self, verb: str) -> str:
        return (
            f"{verb} {self.name} ({self.size} bytes) in {self.seconds:.2f} s, "
            f"{self.mb_per_s:.1f} MB/s"
        )


def _dumps(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def _parse(message: Data, expecting: str) -> dict[str, Any]:
    """A control message as a dict with a string ``type``; TransferProtocolError if not."""
    if isinstance(message, bytes):
        raise TransferProtocolError(f"{len(message)} bytes of data while {expecting}")
    try:
        parsed = json.loads(message)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("type"), str):
        # e.g. an answer peer running the demo's timer on every channel
        raise TransferProtocolError(
            f"the peer does not speak the file protocol: got {message!r:.80} while {expecting}"
        )
    return parsed


def _error_message(name: str | None, error: FileTransferError) -> str:
    return _dumps({"type": "error", "name": name, "code": error.code, "reason": str(error)})


def _error_from(message: dict[str, Any]) -> FileTransferError:
    """The exception a peer's ``error`` message stands for."""
    code = str(message.get("code"))
    reason = str(message.get("reason") or "no reason given")
    name = message.get("name")
    what = f"{name!r} refused by the receiver" if isinstance(name, str) else "refused by the peer"
    return ERRORS_BY_CODE.get(code, FileTransferError)(f"{what}: {reason} ({code})")


async def _receive(channel: Channel, timeout: float, expecting: str) -> Data:
    try:
        async with asyncio.timeout(timeout):
            return await channel.receive()
    except TimeoutError:
        raise TransferTimeout(
            f"nothing from the peer for {timeout:g} s while {expecting}"
        ) from None


async def _send(channel: Channel, data: Data) -> None:
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


# -- progress ----------------------------------------------------------------------


class _Progress:
    """A one-line progress bar with rate and ETA on a terminal, or (``bar`` off)
    one summary line per file through ``status``."""

    REFRESH = 0.1
    WARM_UP = 0.5

    def __init__(
        self, verb: str, header: FileHeader, bar: bool, status: Output, stream: TextIO | None = None
    ) -> None:
        self.verb = verb
        self.header = header
        self.bar = bar
        self.status = status
        self.stream = stream or sys.stderr
        self.started = time.monotonic()
        self.done = 0
        self._drawn_at = 0.0
        self._drawn = False

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.bar and now - self._drawn_at >= self.REFRESH:
            self._drawn_at = now
            self._draw(now)

    def finish(self) -> FileStats:
        self.done = self.header.size
        stats = FileStats(self.header.name, self.header.size, time.monotonic() - self.started)
        if self.bar:
            self._draw(time.monotonic(), final=stats)
            self.stream.write("\n")
            self.stream.flush()
        else:
            self.status(stats.summary(self.verb))
        return stats

    def abort(self) -> None:
        """End the bar's line, so that an error message starts on a fresh one."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self, now: float, final: FileStats | None = None) -> None:
        width = max(40, shutil.get_terminal_size((80, 24)).columns - 1)
        elapsed = max(now - self.started, 1e-9)
        total = self.header.size
        rate = self.done / elapsed
        if final is not None:
            tail = f"{_human(total)} in {final.seconds:.1f} s, {final.mb_per_s:.1f} MB/s"
        elif elapsed < self.WARM_UP or rate <= 0:
            # The first blocks only fill buffers: a rate from them would be nonsense.
            tail = f"{_human(self.done)}/{_human(total)} --.- MB/s ETA --:--"
        else:
            eta = (total - self.done) / rate
            tail = f"{_human(self.done)}/{_human(total)} {rate / 1e6:.1f} MB/s ETA {_clock(eta)}"
        fraction = 1.0 if total == 0 else min(1.0, self.done / total)
        head = f"{self.verb} {self.header.name}"
        fixed = len(tail) + 9  # "[", "] ", "100%", the spaces between parts
        cells = max(10, min(30, width - len(head) - fixed))
        room = width - fixed - cells
        if len(head) > room:  # a long name gives way, the numbers stay
            head = head[: max(room - 1, 0)] + "…"
        filled = round(fraction * cells)
        line = f"{head} [{'#' * filled}{'-' * (cells - filled)}] {fraction * 100:3.0f}% {tail}"
        self.stream.write("\r" + line.ljust(width)[:width])
        self.stream.flush()
        self._drawn = True


def _human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


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


def unsafe_name(name: str) -> str | None:
    """Why ``name`` is not a plain, visible file name that stays in its
    directory (None if it is). The one check, on both sides."""
    if name in ("", ".", ".."):
        return "not a file name"
    if "/" in name or "\\" in name:
        return "names with a path separator are refused"
    if "\0" in name:
        return "the name contains a NUL character"
    for char in name:
        if unicodedata.category(char) in _REFUSED_CATEGORIES:
            return (
                f"the name contains the invisible or control character "
                f"U+{ord(char):04X} (newline, bidirectional override, zero-width...)"
            )
    try:
        encoded = name.encode()
    except UnicodeEncodeError:
        return "the name is not valid Unicode"
    if len(encoded) > NAME_MAX:
        return f"the name is longer than {NAME_MAX} bytes"
    if _TEMP_NAME.fullmatch(name):
        return "the name is shaped like the receiver's temporary files (.NAME.part-XXXXXXXX)"
    if name.startswith("."):
        return "hidden names (starting with '.') are refused"
    return None


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
            f"not enough free space: the file is {size} bytes ({_human(size)}), the "
            f"receiver's directory has {free} bytes ({_human(free)}) free and keeps "
            f"{_human(FREE_SPACE_MARGIN)} of it free"
        )


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
    await _send(channel, _dumps({"type": "done"}))
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
    meter = _Progress("sent", header, progress, status or log.info)
    try:
        try:
            await _send(channel, header.to_message())
            reply = _parse(
                await _receive(
                    channel, REPLY_TIMEOUT, f"waiting for {header.name!r} to be accepted"
                ),
                "waiting for ready",
            )
            if reply["type"] == "error":
                raise _error_from(reply)
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
    channel: Channel, path: Path, header: FileHeader, meter: _Progress, chunk: int
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
                    await _send(channel, block[start : start + chunk])
                meter.advance(len(block))
        if not verdict.done():
            await _send(channel, _dumps({"type": "eof"}))
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
    reply = _parse(message, f"waiting for the verdict on {header.name!r}")
    if reply["type"] == "error":
        raise _error_from(reply)
    if reply["type"] != "ok":
        raise TransferProtocolError(f"expected ok for {header.name!r}, got {reply!r:.200}")


async def _raise_refusal_if_any(channel: Channel) -> None:
    """The channel closed under the sender: raise the refusal it carried last,
    if any (a peer that refuses files says so, then hangs up)."""
    with contextlib.suppress(ChannelClosed, TransferTimeout, TransferProtocolError):
        while True:  # the inbox holds what arrived before the close, then ends
            message = _parse(await _receive(channel, 1.0, "reading the refusal"), "closing")
            if message["type"] == "error":
                raise _error_from(message)


# -- receiving -----------------------------------------------------------------------


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
            message = await _receive(channel, HEADER_TIMEOUT, "waiting for the next file")
        except ChannelClosed:
            break  # the sender hung up between files (e.g. after a refusal)
        except TransferTimeout as exc:
            status(f"rtc-peer: {exc}")
            raise
        try:
            request = _parse(message, "waiting for a file header")
            if request["type"] == "done":
                break
            if request["type"] != "file":
                raise TransferProtocolError(f"expected a file header, got {request!r:.200}")
            header = FileHeader.from_message(request)
        except TransferProtocolError as exc:
            # Out of step with the sender: say why, let it read that, end the call.
            status(f"rtc-peer: refused: {exc}")
            with contextlib.suppress(PeerError):
                await _send(channel, _error_message(None, exc))
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
    meter = _Progress("received", header, progress, status)
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
            await _send(channel, _dumps({"type": "ready", "name": header.name}))
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
        await _send(channel, _dumps({"type": "ok", "name": header.name}))
        return meter.finish()
    except TransferInterrupted:
        meter.abort()
        raise
    except FileTransferError as exc:
        meter.abort()
        if not answered:
            with contextlib.suppress(PeerError):
                await _send(channel, _error_message(header.name, exc))
        # The reason went to the sender as is; here, say which file it was.
        raise type(exc)(f"refused {header.name!r}: {exc}") from exc
    except BaseException:
        meter.abort()
        raise


async def _receive_data(
    channel: Channel, file: IO[bytes], header: FileHeader, meter: _Progress
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
            message = await _receive(channel, REPLY_TIMEOUT, expecting)
        except ChannelClosed:
            raise TransferInterrupted(
                f"{header.name!r} not stored: the sender closed the channel after "
                f"{received} of {header.size} bytes"
            ) from None
        if isinstance(message, str):
            request = _parse(message, expecting)
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
                await _send(channel, _error_message(header.name, failure))
    if failure is None and pending:
        failure = await _write(file, digest, pending)
        meter.advance(pending_bytes)
        if failure is not None:  # after eof: the verdict is the only answer left
            with contextlib.suppress(PeerError):
                await _send(channel, _error_message(header.name, failure))
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
        await _send(channel, _error_message(None, FilesRefused(reason)))
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(REFUSE_LINGER):
            await channel.closed.wait()
