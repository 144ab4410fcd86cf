"""A data channel as ``async for message in channel`` plus ``await channel.send()``.

aiortc reports data-channel events through callbacks; they are turned into a
queue and events here at once, so the rest of the code reads them in one task.
``send`` honours ``bufferedAmount``: it waits while more than
:attr:`Channel.high_water` bytes are queued, instead of growing memory without
bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiortc import RTCDataChannel

from rtc_signal.peers.errors import ChannelClosed

log = logging.getLogger(__name__)

Data = str | bytes
HIGH_WATER = 1 << 20
LOW_WATER = 256 << 10


class Channel:
    """An open (or opening) RTCDataChannel with async iteration and backpressure."""

    def __init__(self, dc: RTCDataChannel, high_water: int = HIGH_WATER) -> None:
        self.dc = dc
        self.high_water = high_water
        self.opened = asyncio.Event()
        self.closed = asyncio.Event()
        self._inbox: asyncio.Queue[Data | None] = asyncio.Queue()
        self._drained = asyncio.Event()
        self._drained.set()
        dc.bufferedAmountLowThreshold = min(LOW_WATER, high_water)
        dc.on("open", self.opened.set)
        dc.on("message", self._inbox.put_nowait)
        dc.on("close", self._on_close)
        dc.on("bufferedamountlow", self._drained.set)
        if dc.readyState == "open":
            self.opened.set()

    @property
    def label(self) -> str:
        return str(self.dc.label)

    def _on_close(self) -> None:
        self.closed.set()
        self._inbox.put_nowait(None)
        self._drained.set()

    async def send(self, data: Data) -> None:
        """Send one message, waiting while too much is buffered already."""
        while self.dc.bufferedAmount > self.high_water and not self.closed.is_set():
            self._drained.clear()
            await self._drained.wait()
        if self.closed.is_set() or self.dc.readyState != "open":
            raise ChannelClosed(f"data channel {self.label!r} is closed")
        self.dc.send(data)

    async def receive(self) -> Data:
        """The next message; ChannelClosed once the channel has closed."""
        message = await self._inbox.get()
        if message is None:
            self._inbox.put_nowait(None)  # keep reporting the close
            raise ChannelClosed(f"data channel {self.label!r} closed")
        return message

    async def __aiter__(self) -> AsyncIterator[Data]:
        """Messages until the channel closes (then the iteration just ends)."""
        while True:
            try:
                yield await self.receive()
            except ChannelClosed:
                return

    async def close(self, timeout: float = 5.0) -> None:
        """Close the channel after what was sent is delivered (SCTP stream reset
        follows the data), waiting at most ``timeout`` for the close to finish."""
        self.dc.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.closed.wait(), timeout)
