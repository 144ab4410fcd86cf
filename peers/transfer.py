"""The file-transfer protocol (sans-I/O): its messages, codes, errors and
name rules; the I/O is in :mod:`peers.files` (sending) and
:mod:`peers.file_receiver` (receiving).

File transfer runs over a data channel labelled ``files``.

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

import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, ClassVar

from rtc_signal.peers.errors import ChannelClosed, PeerError

MIB = 1 << 20

#: A data-channel message (as peers.channel.Data; not imported: no aiortc here).
Data = str | bytes

FILES_LABEL = "files"
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
        return dumps_message(
            {"type": "file", "name": self.name, "size": self.size, "sha256": self.sha256}
        )

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

    @property
    def mib_per_s(self) -> float:
        """Throughput in MiB/s (2^20 bytes), the unit every line shown uses."""
        return self.size / MIB / self.seconds if self.seconds > 0 else 0.0

    def summary(self, verb: str) -> str:
        return (
            f"{verb} {self.name} ({self.size} bytes) in {self.seconds:.2f} s, "
            f"{self.mib_per_s:.1f} MiB/s"
        )


def dumps_message(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def parse_message(message: Data, expecting: str) -> dict[str, Any]:
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


def error_message(name: str | None, error: FileTransferError) -> str:
    return dumps_message({"type": "error", "name": name, "code": error.code, "reason": str(error)})


def error_from(message: dict[str, Any]) -> FileTransferError:
    """The exception a peer's ``error`` message stands for."""
    code = str(message.get("code"))
    reason = str(message.get("reason") or "no reason given")
    name = message.get("name")
    what = f"{name!r} refused by the receiver" if isinstance(name, str) else "refused by the peer"
    return ERRORS_BY_CODE.get(code, FileTransferError)(f"{what}: {reason} ({code})")


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


def human_size(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
