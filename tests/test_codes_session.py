"""A code's owner (peers.codecall.serve_code) against hand-driven callers on a
real in-process signaling server: the one-attempt rule, seen from the wire."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from rtc_signal.peers.codecall import serve_code
from rtc_signal.peers.codes import Code
from rtc_signal.peers.ice import IceSettings
from rtc_signal.peers.pake import ABORT_BODY, CodeAuth, CodeMismatch
from rtc_signal.peers.session import Call, PeerConfig
from rtc_signal.peers.signaling_client import SignalingClient
from rtc_signal.proto import Command
from tests.conftest import run, running_server, within

CODE = Code(4242, ("zebra", "abandon"))


async def next_candidate(signaling: SignalingClient) -> bytes:
    """The next Candidate body the server forwards to ``signaling``."""
    async for envelope in signaling.requests():
        await signaling.acknowledge(envelope.command)
        if envelope.command is Command.CANDIDATE:
            assert envelope.request.body is not None
            return envelope.request.body
    raise AssertionError("unreachable")


def test_a_second_exchange_during_the_attempt_is_refused_and_an_abort_burns_the_code() -> None:
    async def scenario() -> None:
        async with running_server() as server:
            config = PeerConfig(
                signal_url=server.url,
                ice=IceSettings(host_addresses=("127.0.0.1",)),
                connect_timeout=20,
            )
            registered = asyncio.Event()

            async def never_called(c: Call) -> None:
                raise AssertionError("no call may be set up")

            owner = asyncio.create_task(
                serve_code(config, never_called, lambda _code: registered.set(), CODE)
            )
            try:
                await within(registered.wait(), 15)
                first = await SignalingClient.connect(server.url, "/offer", 10)
                second = await SignalingClient.connect(server.url, "/offer", 10)
                try:
                    mine = CodeAuth(CODE, "offer", "caller-1", CODE.peer_id)
                    await first.send_candidate("caller-1", CODE.peer_id, mine.message())
                    mine.receive(await within(next_candidate(first), 10))
                    assert mine.keyed  # the owner took the first exchange

                    intruder = CodeAuth(CODE, "offer", "caller-2", CODE.peer_id)
                    await second.send_candidate("caller-2", CODE.peer_id, intruder.message())
                    assert await within(next_candidate(second), 10) == ABORT_BODY

                    # the first caller gives up before its offer: the code is burnt
                    await first.send_candidate("caller-1", CODE.peer_id, ABORT_BODY)
                    with pytest.raises(CodeMismatch):
                        await within(owner, 10)
                finally:
                    await first.close()
                    await second.close()
            finally:
                owner.cancel()
                with contextlib.suppress(BaseException):
                    await owner

    run(scenario(), 60)
