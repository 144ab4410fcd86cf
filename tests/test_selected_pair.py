"""rtc_signal.peers.ice.selected_pair: the ICE pair a call uses, read on both ends of a
real loopback call (an in-process server and two aiortc peers)."""

from __future__ import annotations

import asyncio

from aiortc import RTCPeerConnection

from rtc_signal.peers import AnswerPeer, IceSettings, PeerConfig, call
from rtc_signal.peers.ice import SelectedPair, selected_pair
from rtc_signal.peers.session import Call
from tests.conftest import run, running_server


def test_selected_pair_is_none_before_a_connection() -> None:
    """A peer connection without a transport yet has no pair (no error)."""

    async def scenario() -> None:
        pc = RTCPeerConnection(IceSettings().rtc_configuration())  # no public STUN
        try:
            assert selected_pair(pc) is None
        finally:
            await pc.close()

    run(scenario())


def test_both_ends_report_the_same_host_pair_mirrored() -> None:
    """Over loopback both ends use host candidates, each the other's mirror."""

    async def scenario() -> tuple[SelectedPair | None, SelectedPair | None]:
        async with running_server() as server:
            config = PeerConfig(
                signal_url=server.url, ice=IceSettings(host_addresses=("127.0.0.1",))
            )
            seen: list[SelectedPair | None] = []

            async def handler(c: Call) -> None:
                seen.append(selected_pair(c.pc))
                await c.channel.receive()

            peer = AnswerPeer(config, "pair-answer", reconnect=None)
            serving = asyncio.create_task(peer.serve(handler, max_calls=1))
            try:
                await peer.wait_registered(5)
                async with call(config, "pair-answer") as c:
                    mine = selected_pair(c.pc)
                    await c.channel.send("done")
                await asyncio.wait_for(serving, 10)
            finally:
                serving.cancel()
            return mine, seen[0]

    offer_side, answer_side = run(scenario())
    assert offer_side is not None and answer_side is not None
    assert offer_side.local_type == offer_side.remote_type == "host"
    assert offer_side.local_address == answer_side.remote_address
    assert offer_side.remote_address == answer_side.local_address
    assert offer_side.local_address[0] == "127.0.0.1"
    assert str(offer_side).startswith("host 127.0.0.1:")
