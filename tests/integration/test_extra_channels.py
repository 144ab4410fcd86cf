"""Channels a caller opens after the first one, on the same connection."""

from __future__ import annotations

import asyncio
import contextlib

from rtc_signal.peers import AnswerPeer, Call, Channel, IceSettings, PeerConfig, call
from tests.conftest import run, running_server, within


def test_answer_peer_runs_its_handler_on_every_channel_of_a_call() -> None:
    """A second channel ("control" beside "data", as the browser page opens it)
    gets the handler too, while the first one's call goes on; the call ends
    with the first channel."""

    async def main() -> None:
        async with running_server() as server:
            config = PeerConfig(
                signal_url=server.url, ice=IceSettings(host_addresses=("127.0.0.1",))
            )
            labels: list[str] = []

            async def echo(c: Call) -> None:
                labels.append(c.channel.label)
                async for message in c.channel:
                    await c.channel.send(f"{c.channel.label}:{message!s}")

            answer = AnswerPeer(config, "multi")
            serving = asyncio.ensure_future(answer.serve(echo))
            try:
                await answer.wait_registered(10)
                async with call(config, "multi") as c:
                    await c.channel.send("one")
                    assert await within(c.channel.receive(), 10) == "data:one"
                    control = Channel(c.pc.createDataChannel("control"))
                    await within(control.opened.wait(), 10)
                    await control.send("two")
                    assert await within(control.receive(), 10) == "control:two"
                    # the first channel still works beside it
                    await c.channel.send("three")
                    assert await within(c.channel.receive(), 10) == "data:three"
                assert labels == ["data", "control"]
            finally:
                serving.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await serving

    run(main(), timeout=60)
