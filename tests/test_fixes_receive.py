"""peers/fixes.py: one malformed data-channel message (invalid UTF-8 text, a
bad DCEP OPEN or ACK) must not kill the whole peer connection (aiortc 1.16 bug,
worked around). Two real aiortc peers over 127.0.0.1, connected in-process; the
sender injects raw SCTP messages below aiortc's data-channel API."""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib.metadata import version

import pytest
from aiortc import RTCDataChannel, RTCPeerConnection
from aiortc.rtcsctptransport import (
    DATA_CHANNEL_ACK,
    DATA_CHANNEL_OPEN,
    WEBRTC_DCEP,
    WEBRTC_STRING,
    RTCSctpTransport,
)

from rtc_signal.peers import IceSettings, fixes
from rtc_signal.peers.ice import restrict_host_addresses
from tests.conftest import eventually, run, within

ICE = IceSettings(host_addresses=("127.0.0.1",))
UNKNOWN_STREAM = 1000  # no channel uses it


@dataclass
class Pair:
    """Two connected peers and the two ends of their one data channel."""

    sender: RTCPeerConnection
    receiver: RTCPeerConnection
    sent: RTCDataChannel
    received: RTCDataChannel
    inbox: asyncio.Queue[str | bytes] = field(default_factory=asyncio.Queue)
    opened: list[RTCDataChannel] = field(default_factory=list)  # on the receiver

    async def inject(self, pp_id: int, payload: bytes, stream_id: int | None = None) -> None:
        """Send one raw SCTP message (default: on the channel's stream) after
        what the channel has queued."""
        transport: RTCSctpTransport | None = self.sender.sctp
        assert transport is not None and self.sent.id is not None
        await transport._data_channel_flush()
        await transport._send(self.sent.id if stream_id is None else stream_id, pp_id, payload)

    def receiver_dtls_closed(self) -> bool:
        assert self.receiver.sctp is not None
        return bool(self.receiver.sctp.transport.state == "closed")

    async def arrives(self, expected: str, timeout: float) -> bool:
        """Send ``expected`` normally; True if it is the next message received."""
        self.sent.send(expected)
        try:
            return await within(self.inbox.get(), timeout) == expected
        except TimeoutError:
            return False


@asynccontextmanager
async def connected() -> AsyncIterator[Pair]:
    """Offer/answer exchanged in-process (no signaling server), channel open on both ends."""
    with restrict_host_addresses(ICE.host_addresses):
        sender = RTCPeerConnection(ICE.rtc_configuration())
        receiver = RTCPeerConnection(ICE.rtc_configuration())
    try:
        opened: list[RTCDataChannel] = []
        first: asyncio.Future[RTCDataChannel] = asyncio.get_running_loop().create_future()

        @receiver.on("datachannel")
        def on_channel(dc: RTCDataChannel) -> None:
            opened.append(dc)
            if not first.done():
                first.set_result(dc)

        sent = sender.createDataChannel("data")
        with restrict_host_addresses(ICE.host_addresses):
            await sender.setLocalDescription(await sender.createOffer())
            await receiver.setRemoteDescription(sender.localDescription)
            await receiver.setLocalDescription(await receiver.createAnswer())
            await sender.setRemoteDescription(receiver.localDescription)
        received = await within(first, 10)
        await eventually(lambda: sent.readyState == "open", 10)
        pair = Pair(sender, receiver, sent, received, opened=opened)
        received.on("message", pair.inbox.put_nowait)
        yield pair
    finally:
        await within(asyncio.gather(sender.close(), receiver.close()), 10)


def _open(label: bytes, protocol: bytes = b"") -> bytes:
    """A DCEP DATA_CHANNEL_OPEN (reliable, ordered) with raw label/protocol bytes."""
    header = struct.pack("!BBHLHH", DATA_CHANNEL_OPEN, 0, 0, 0, len(label), len(protocol))
    return header + label + protocol


def _malformed(pair: Pair, case: str) -> tuple[int, bytes, int | None]:
    """(PPID, payload, stream id) of each message unfixed aiortc 1.16 dies on."""
    if case == "text":
        return WEBRTC_STRING, b"\xff\xfe bad", None
    if case == "ack-unknown":
        return WEBRTC_DCEP, struct.pack("!B", DATA_CHANNEL_ACK), UNKNOWN_STREAM
    if case == "open-existing":
        return WEBRTC_DCEP, _open(b"again"), pair.sent.id
    assert case == "open-bad-label"
    return WEBRTC_DCEP, _open(b"ok\xc3"), UNKNOWN_STREAM  # truncated 2-byte sequence


CASES = ["text", "ack-unknown", "open-existing", "open-bad-label"]


def test_invalid_utf8_text_is_delivered_with_replacements_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With the fix, bad UTF-8 text arrives with U+FFFD (one WARNING per channel), call goes on."""
    assert fixes.apply()
    caplog.set_level(logging.DEBUG, logger=fixes.__name__)

    async def scenario() -> list[str | bytes]:
        async with connected() as pair:
            pair.sent.send("héllo ✓")
            await pair.inject(WEBRTC_STRING, b"\xff\xfe bad")
            await pair.inject(WEBRTC_STRING, b"ok \xe2\x9c then")  # truncated ✓ mid-text
            pair.sent.send("after")
            got = [await within(pair.inbox.get(), 5) for _ in range(4)]
            assert pair.receiver.connectionState == "connected"
            assert not pair.receiver_dtls_closed()
            return got

    got = run(scenario())
    assert got == ["héllo ✓", "\ufffd\ufffd bad", "ok \ufffd then", "after"]
    records = [r for r in caplog.records if r.name == fixes.__name__]
    assert [r.levelno for r in records] == [logging.WARNING, logging.DEBUG]
    warning = records[0].getMessage()
    assert "'data'" in warning and "6 bytes" in warning and "offset 0" in warning
    assert "offset 3" in records[1].getMessage()


@pytest.mark.parametrize("case", CASES[1:])
def test_bad_dcep_messages_are_dropped_and_the_call_goes_on(
    case: str, caplog: pytest.LogCaptureFixture
) -> None:
    """With the fix, a bad DCEP OPEN/ACK is dropped with a WARNING, opens nothing; call goes on."""
    assert fixes.apply()

    async def scenario() -> tuple[bool, int]:
        async with connected() as pair:
            pp_id, payload, stream_id = _malformed(pair, case)
            await pair.inject(pp_id, payload, stream_id)
            after = await pair.arrives("after", 5)
            assert not pair.receiver_dtls_closed()
            return after, len(pair.opened)

    after, opened = run(scenario())
    assert after
    assert opened == 1  # only the real channel
    warnings = [r.getMessage() for r in caplog.records if r.name == fixes.__name__]
    assert len(warnings) == 1 and "dropped a DCEP" in warnings[0]


@pytest.mark.skipif(
    not version("aiortc").startswith(fixes.VERIFIED), reason="the fix is for aiortc 1.16"
)
@pytest.mark.parametrize("case", CASES)
def test_the_bug_is_real_without_the_fix(case: str, without_fix: None) -> None:
    """Unfixed aiortc 1.16 closes the receiver's whole connection (fails once fixed upstream)."""

    async def scenario() -> bool:
        async with connected() as pair:
            pp_id, payload, stream_id = _malformed(pair, case)
            await pair.inject(pp_id, payload, stream_id)
            await eventually(pair.receiver_dtls_closed, 5)
            await eventually(lambda: pair.receiver.connectionState == "closed", 5)
            return await pair.arrives("after", 1)

    assert not run(scenario())
