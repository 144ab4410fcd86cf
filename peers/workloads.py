"""What runs on an open data channel. For now: the Go demo's timer.

Each workload takes the :class:`~peers.channel.Channel` and an ``output``
callback for the lines a user sees (the CLI prints them; library users may
collect them), and returns when it is done.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from rtc_signal.peers.channel import Channel
from rtc_signal.peers.errors import ChannelClosed

log = logging.getLogger(__name__)

Output = Callable[[str], None]


@dataclass
class TimerResult:
    sent: int = 0
    received: int = 0


async def timer(
    channel: Channel, prefix: str, interval: float, count: int | None, output: Output
) -> TimerResult:
    """Send ``<prefix>-<n>`` every ``interval`` seconds and print what arrives.

    With ``count``, stop after ``count`` sent and ``count`` received, close
    the channel (the close follows the data, so the peer gets everything) and
    return; raise ChannelClosed if the channel closes before that. Without
    ``count``, run until the channel closes.
    """
    result = TimerResult()

    async def send_loop() -> None:
        while count is None or result.sent < count:
            await asyncio.sleep(interval)
            message = f"{prefix}-{result.sent + 1}"
            await channel.send(message)
            result.sent += 1
            output(f"sent {message}")

    async def receive_loop() -> None:
        while count is None or result.received < count:
            message = await channel.receive()
            result.received += 1
            text = message if isinstance(message, str) else message.decode("utf-8", "replace")
            output(f"recv {text}")

    closed_early = False
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(send_loop())
            tasks.create_task(receive_loop())
    except* ChannelClosed:
        closed_early = True
    if not closed_early:
        await channel.close()
    elif count is not None:
        raise ChannelClosed(
            f"data channel closed after {result.sent} sent and {result.received} "
            f"received of {count}"
        )
    else:
        log.info("data channel closed by the peer")
    return result
