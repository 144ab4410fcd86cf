"""What ``rtc-peer join`` runs in a room: a group chat, or a message timer.

Both print each message received as ``<sender>: <text>`` (``output``) and
tell about members joining, connecting and leaving (``status``, stderr on
the command line).

- :func:`room_chat` sends each line of its source to every connected member;
  the end of the source ends the chat (the caller then leaves the room,
  after what was sent is delivered).
- :func:`room_timer` sends ``<id>-1``, ``<id>-2``, ... to each member every
  ``interval`` seconds, a sequence per member started when the connection
  to it opens. With ``count`` it returns once the run is complete in the
  sense of :mod:`peers.tally` (N both ways with every member present, and at
  least ``expect`` members); without, it runs until cancelled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import BinaryIO

from rtc_signal.peers.input_reader import open_reader
from rtc_signal.peers.room import (
    MemberConnected,
    MemberJoined,
    MemberLeft,
    Room,
    RoomEvent,
    RoomMessage,
)
from rtc_signal.peers.stream import CHUNK, MAX_LINE
from rtc_signal.peers.stream_protocol import LineSplitter
from rtc_signal.peers.tally import Tally

log = logging.getLogger(__name__)

Output = Callable[[str], None]


def printable(text: str) -> str:
    """``text`` as printed: another member chose it, so control and format
    characters (newlines, ANSI escapes, U+202E...) become ``?``."""
    return "".join(c if c.isprintable() or c == "\t" else "?" for c in text)


def _notice(room: Room, event: RoomEvent, output: Output, status: Output) -> None:
    """Print what an event means to the user."""
    match event:
        case RoomMessage(sender, text):
            output(f"{printable(sender)}: {printable(text)}")
        case MemberJoined(member):
            status(f"rtc-peer: {printable(member)} joined {room.name}")
        case MemberConnected(member):
            status(f"rtc-peer: connected to {printable(member)}")
        case MemberLeft(member):
            status(f"rtc-peer: {printable(member)} left {room.name}")


async def room_chat(room: Room, source: BinaryIO, output: Output, status: Output) -> None:
    """Send each line of ``source`` to every connected member until it ends;
    print what arrives meanwhile."""

    async def print_events() -> None:
        while True:
            _notice(room, await room.next_event(), output, status)

    async with asyncio.TaskGroup() as tasks:
        printer = tasks.create_task(print_events())
        async with open_reader(source) as reader:
            lines = LineSplitter(MAX_LINE)
            while chunk := await reader.read(CHUNK):
                for line in lines.feed(chunk):
                    await _send_line(room, line, status)
            last = lines.finish()
            if last is not None:
                await _send_line(room, last, status)
        log.info("end of input: leaving %r", room.name)
        printer.cancel()


async def _send_line(room: Room, line: bytes, status: Output) -> None:
    if not await room.send(line.decode("utf-8", "replace")):
        status("rtc-peer: nobody connected yet; line not sent")


async def room_timer(
    room: Room,
    interval: float,
    count: int | None,
    expect: int,
    output: Output,
    status: Output,
) -> Tally | None:
    """Send ``<id>-k`` to each member on a timer; see the module docstring.

    Returns the :class:`Tally` once complete (with ``count``).
    """
    tally = Tally(count, expect, room.members) if count is not None else None
    progress = asyncio.Event()
    senders: dict[str, asyncio.Task[None]] = {}

    async def send_loop(member: str) -> None:
        sent = 0
        while count is None or sent < count:
            await asyncio.sleep(interval)
            if not await room.send_to(member, f"{room.peer_id}-{sent + 1}"):
                log.info("connection to %r gone: its timer stops", member)
                return
            sent += 1
            if tally is not None:
                tally.sent(member)
                progress.set()

    def stop_sender(member: str) -> None:
        task = senders.pop(member, None)
        if task is not None:
            task.cancel()

    async with asyncio.TaskGroup() as tasks:
        while tally is None or not tally.done():
            event = await _next_or(room, progress)
            progress.clear()
            if event is None:
                continue
            _notice(room, event, output, status)
            match event:
                case RoomMessage(sender, _) if tally is not None:
                    tally.received(sender)
                case MemberJoined(member) if tally is not None:
                    tally.joined(member)
                case MemberConnected(member):
                    stop_sender(member)
                    if tally is not None:
                        tally.connected(member)
                    senders[member] = tasks.create_task(send_loop(member))
                case MemberLeft(member):
                    stop_sender(member)
                    unfinished = tally.left(member) if tally is not None else None
                    if unfinished is not None and count is not None:
                        status(
                            f"rtc-peer: {printable(member)} left before finishing: "
                            f"{unfinished.sent}/{count} sent, "
                            f"{unfinished.received}/{count} received"
                        )
        for member in list(senders):
            stop_sender(member)
    if tally is not None:
        status(f"rtc-peer: done: {tally.progress()}")
    return tally


async def _next_or(room: Room, progress: asyncio.Event) -> RoomEvent | None:
    """The room's next event, or None as soon as ``progress`` is set."""
    if progress.is_set():
        return None
    event = asyncio.ensure_future(room.next_event())
    moved = asyncio.ensure_future(progress.wait())
    try:
        await asyncio.wait({event, moved}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        moved.cancel()
        if not event.done():
            event.cancel()
    if event.done() and not event.cancelled():
        return event.result()
    return None
