"""rtc_signal.peers.tuning: the aiortc/aioice speed-ups keep aiortc's behaviour.

- delayed SACKs (real RTCSctpTransport, fake DTLS below it): every second
  packet of a stream, at once on a gap, a duplicate or the I bit and for
  isolated packets, and after SACK_DELAY for the last one of a stream;
- the reassembly shortcut delivers exactly what aiortc's own walk delivers,
  for random arrival orders (hypothesis);
- a transfer between two real peers in this process survives random packet
  loss and a blackout longer than the retransmission timeout (fast
  retransmit, T3 expiry), with tuning on and off;
- RTC_PEER_NO_TUNING=1 switches everything off.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from aioice.ice import StunProtocol
from aiortc import rtcsctptransport as sctp
from hypothesis import given, settings
from hypothesis import strategies as st

from rtc_signal.peers import AnswerPeer, Call, IceSettings, PeerConfig, call, tuning
from tests.conftest import run, running_server

pytestmark = pytest.mark.skipif(
    not tuning.applied(), reason="no tweak applies to the installed aiortc/aioice"
)
ICE = IceSettings(host_addresses=("127.0.0.1",))


@pytest.fixture
def tuning_state(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tuning on (as peers.session applied it) or off for one test."""
    if getattr(request, "param", "on") == "off":
        tuning.remove()
        try:
            yield
        finally:
            tuning.apply(tuning.NAMES)
    else:
        yield


# -- delayed SACK -------------------------------------------------------------------


class _FakeDtls:
    state = "connected"

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.sent_something = asyncio.Event()

    async def _send_data(self, data: bytes) -> None:
        self.sent.append(data)
        self.sent_something.set()

    def _register_data_receiver(self, receiver: Any) -> None:
        pass


def _receiver() -> tuple[sctp.RTCSctpTransport, _FakeDtls]:
    dtls = _FakeDtls()
    transport = sctp.RTCSctpTransport(dtls)  # type: ignore[arg-type]
    transport._association_state = sctp.RTCSctpTransport.State.ESTABLISHED
    transport._remote_port = 5000
    transport._last_received_tsn = 99  # next expected TSN: 100
    return transport, dtls


def _data_packet(transport: sctp.RTCSctpTransport, tsn: int, flags: int = 0x03) -> bytes:
    chunk = sctp.DataChunk(flags=flags)
    chunk.tsn = tsn
    chunk.stream_id = 7  # no channel: the payload is dropped after SCTP
    chunk.protocol = sctp.WEBRTC_BINARY
    chunk.user_data = b"x" * 100
    return sctp.serialize_packet(5000, 5000, transport._local_verification_tag, chunk)


def _sacks(dtls: _FakeDtls) -> list[tuple[int, list[Any]]]:
    """(cumulative TSN, gap blocks) of every SACK sent."""
    out = []
    for packet in dtls.sent:
        for chunk in sctp.parse_packet(packet)[3]:
            assert isinstance(chunk, sctp.SackChunk)
            out.append((chunk.cumulative_tsn, list(chunk.gaps)))
    return out


@pytest.fixture
def streaming(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every packet counts as part of a stream (the test's packets are not
    always less than STREAM_GAP apart on a busy machine)."""
    monkeypatch.setattr(tuning, "STREAM_GAP", 60.0)


def test_streamed_packets_are_acknowledged_every_second_one(streaming: None) -> None:
    async def scenario() -> list[list[tuple[int, list[Any]]]]:
        transport, dtls = _receiver()
        seen = []
        for tsn in range(100, 106):
            await transport._handle_data(_data_packet(transport, tsn))
            seen.append(_sacks(dtls))
        return seen

    seen = run(scenario())
    assert seen == [
        [(100, [])],  # the first packet starts no stream: acknowledged at once
        [(100, [])],
        [(100, []), (102, [])],
        [(100, []), (102, [])],
        [(100, []), (102, []), (104, [])],
        [(100, []), (102, []), (104, [])],
    ]


def test_the_last_packet_of_a_stream_is_acknowledged_after_the_delay(streaming: None) -> None:
    async def scenario() -> tuple[list[Any], list[Any], float]:
        transport, dtls = _receiver()
        loop = asyncio.get_running_loop()
        await transport._handle_data(_data_packet(transport, 100))
        await transport._handle_data(_data_packet(transport, 101))
        before = _sacks(dtls)
        dtls.sent_something.clear()
        started = loop.time()
        await asyncio.wait_for(dtls.sent_something.wait(), 2)
        return before, _sacks(dtls), loop.time() - started

    before, after, waited = run(scenario())
    assert before == [(100, [])]
    assert after == [(100, []), (101, [])]
    assert waited < tuning.SACK_DELAY + 0.5  # well within RFC 9260's 200 ms bound


def test_isolated_packets_are_acknowledged_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Request/response traffic: packets further apart than STREAM_GAP."""
    monkeypatch.setattr(tuning, "STREAM_GAP", 0.0)

    async def scenario() -> list[tuple[int, list[Any]]]:
        transport, dtls = _receiver()
        for tsn in range(100, 103):
            await transport._handle_data(_data_packet(transport, tsn))
        return _sacks(dtls)

    assert run(scenario()) == [(100, []), (101, []), (102, [])]


def test_gaps_duplicates_and_the_i_bit_are_acknowledged_at_once(streaming: None) -> None:
    async def scenario() -> list[list[tuple[int, list[Any]]]]:
        transport, dtls = _receiver()
        seen = []
        # 101 before 100: a gap -> SACK at once, with the gap block
        await transport._handle_data(_data_packet(transport, 101))
        seen.append(_sacks(dtls))
        # 100 fills it: still the packet right after a gap -> at once
        await transport._handle_data(_data_packet(transport, 100))
        seen.append(_sacks(dtls))
        # a duplicate -> at once
        await transport._handle_data(_data_packet(transport, 100))
        seen.append(_sacks(dtls))
        # an in-order packet with the I bit (RFC 7053) -> at once
        await transport._handle_data(_data_packet(transport, 102, flags=0x03 | 0x08))
        seen.append(_sacks(dtls))
        return seen

    seen = run(scenario())
    assert seen[0] == [(99, [(2, 2)])]
    assert len(seen[1]) == 2 and seen[1][1][0] == 101
    assert len(seen[2]) == 3 and seen[2][2][0] == 101
    assert len(seen[3]) == 4 and seen[3][3] == (102, [])


# -- reassembly shortcut ------------------------------------------------------------


@st.composite
def _arrivals(draw: st.DrawFn) -> tuple[list[sctp.DataChunk], list[int]]:
    """Chunks of a few messages (ordered or not, 1-6 fragments) with
    consecutive TSNs, and an arrival order: mostly in order, some swaps."""
    chunks = []
    tsn = 1000
    seq = 0
    for _ in range(draw(st.integers(1, 8))):
        ordered = draw(st.booleans())
        fragments = draw(st.integers(1, 6))
        for i in range(fragments):
            chunk = sctp.DataChunk()
            chunk.flags = (0 if ordered else sctp.SCTP_DATA_UNORDERED) | (
                (sctp.SCTP_DATA_FIRST_FRAG if i == 0 else 0)
                | (sctp.SCTP_DATA_LAST_FRAG if i == fragments - 1 else 0)
            )
            chunk.tsn = tsn
            chunk.stream_id = 1
            chunk.stream_seq = seq if ordered else 0
            chunk.protocol = sctp.WEBRTC_BINARY
            chunk.user_data = tsn.to_bytes(4, "big")
            chunks.append(chunk)
            tsn += 1
        if ordered:
            seq += 1
    order = list(range(len(chunks)))
    for _ in range(draw(st.integers(0, 4))):
        i = draw(st.integers(0, len(order) - 1))
        j = draw(st.integers(0, len(order) - 1))
        order[i], order[j] = order[j], order[i]
    return chunks, order


@settings(max_examples=300, deadline=None)
@given(_arrivals(), st.integers(0, 2**31))
def test_reassembly_shortcut_delivers_what_aiortc_delivers(
    arrivals: tuple[list[sctp.DataChunk], list[int]], seed: int
) -> None:
    chunks, order = arrivals
    original_pop = tuning.original(sctp.InboundStream, "pop_messages")
    plain, tuned = sctp.InboundStream(), sctp.InboundStream()
    rng = random.Random(seed)
    for index in order:
        chunk = chunks[index]
        plain.add_chunk(chunk)
        tuned.add_chunk(chunk)
        assert list(tuned.pop_messages()) == list(original_pop(plain))
        if rng.random() < 0.1:  # as a FORWARD TSN does: skip ahead and prune
            tsn = chunk.tsn
            plain.sequence_number = tuned.sequence_number = (plain.sequence_number + 1) % 65536
            assert list(tuned.pop_messages()) == list(original_pop(plain))
            assert tuned.prune_chunks(tsn) == plain.prune_chunks(tsn)
        assert [c.tsn for c in tuned.reassembly] == [c.tsn for c in plain.reassembly]


# -- a real transfer through loss ---------------------------------------------------

MESSAGES = 300
SIZE = 16 * 1024


async def _sink(c: Call) -> None:
    expected = 0
    async for message in c.channel:
        assert isinstance(message, bytes)
        if len(message) != SIZE or int.from_bytes(message[:4], "big") != expected:
            await c.channel.send(f"bad {expected}")
            return
        expected += 1
        if expected == MESSAGES:
            await c.channel.send(f"got {expected}")


@pytest.mark.parametrize("tuning_state", ["on", "off"], indirect=True)
def test_a_transfer_survives_loss_and_a_blackout(
    tuning_state: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """5 MB through 2% random loss (both directions) with a 1.5 s blackout
    in the middle (longer than the 1 s minimum RTO: T3 fires): every message
    arrives, whole and in order."""
    rng = random.Random(1234)
    state = {"blackout": False, "dropped": 0}
    received = StunProtocol.datagram_received

    def lossy(self: StunProtocol, data: bytes, addr: tuple[Any, ...]) -> None:
        if data and 19 < data[0] < 64 and (state["blackout"] or rng.random() < 0.02):
            state["dropped"] += 1
            return
        received(self, data, addr)

    monkeypatch.setattr(StunProtocol, "datagram_received", lossy)

    async def scenario() -> str:
        async with running_server() as srv:
            config = PeerConfig(signal_url=srv.url, ice=ICE, connect_timeout=10)
            peer = AnswerPeer(config, "tuning-sink")
            serving = asyncio.create_task(peer.serve(_sink, max_calls=1))
            await peer.wait_registered(10)
            async with call(config, "tuning-sink") as c:
                payload = os.urandom(SIZE - 4)
                for i in range(MESSAGES):
                    if i == MESSAGES // 2:
                        state["blackout"] = True
                        asyncio.get_running_loop().call_later(
                            1.5, state.__setitem__, "blackout", False
                        )
                    await c.channel.send(i.to_bytes(4, "big") + payload)
                reply = await asyncio.wait_for(c.channel.receive(), 60)
                await c.channel.close(2)
            await asyncio.wait_for(serving, 10)
            return str(reply)

    assert run(scenario(), timeout=90) == f"got {MESSAGES}"
    assert state["dropped"] > 50


def test_rtc_peer_no_tuning_switches_everything_off() -> None:
    code = "from rtc_signal.peers import session, tuning; print(','.join(tuning.applied()))"
    env = {**os.environ, "RTC_PEER_NO_TUNING": "1"}
    env.pop("RTC_PEER_TUNING", None)
    off = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    env.pop("RTC_PEER_NO_TUNING")
    env["RTC_PEER_TUNING"] = "delayed_sack,reassembly"
    some = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert (off.returncode, off.stdout.strip()) == (0, "")
    assert (some.returncode, some.stdout.strip()) == (0, "delayed_sack,reassembly")


def test_rto_min_is_lowered_while_applied_and_restored_after() -> None:
    """rto_min: aiortc's RTO floor is 0.22 s (dcsctp's) while tuned, 1 s (RFC 9260) after."""
    import aiortc.rtcsctptransport as sctp

    assert "rto_min" in tuning.applied()
    assert sctp.SCTP_RTO_MIN == tuning.RTO_MIN == 0.22
    tuning.remove()
    try:
        assert sctp.SCTP_RTO_MIN == 1
    finally:
        tuning.apply(tuning.NAMES)
    assert sctp.SCTP_RTO_MIN == 0.22


# -- ICE pacing -----------------------------------------------------------------------


async def _ice_pair() -> tuple[Any, Any]:
    """Two real aioice connections on 127.0.0.1 that know each other."""
    from aioice import Connection

    from rtc_signal.peers.ice import restrict_host_addresses

    with restrict_host_addresses(["127.0.0.1"]):
        a = Connection(ice_controlling=True, components=1, use_ipv6=False)
        b = Connection(ice_controlling=False, components=1, use_ipv6=False)
        await a.gather_candidates()
        await b.gather_candidates()
    for one, other in ((a, b), (b, a)):
        one.remote_username, one.remote_password = other.local_username, other.local_password
        for candidate in other.local_candidates:
            await one.add_remote_candidate(candidate)
        await one.add_remote_candidate(None)  # end of candidates
    return a, b


def test_ice_pacing_is_applied_with_the_verified_aioice() -> None:
    from aioice.ice import Connection

    assert "ice_pacing" in tuning.applied()
    assert Connection.connect is not tuning.original(Connection, "connect")


def test_ice_connect_returns_when_checks_complete_not_at_the_pacing_tick(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ice_pacing: with a 60 s pace between check starts, connect() still returns
    as soon as the (single) check succeeded; aioice's own connect() would sleep
    the whole pace first. The connection then carries data."""
    monkeypatch.setattr(tuning, "ICE_PACING", 60.0)

    async def scenario() -> bytes:
        a, b = await _ice_pair()
        try:
            async with asyncio.timeout(20):  # far below the 60 s pace
                await asyncio.gather(a.connect(), b.connect())
                await a.send(b"hello")
                return bytes(await b.recv())
        finally:
            await a.close()
            await b.close()

    assert run(scenario(), timeout=40) == b"hello"


def test_ice_connect_still_fails_when_no_check_can_succeed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ice_pacing: a remote that never answers (its connection closed) still
    ends in aioice's ConnectionError once every check has failed."""
    from aioice import stun

    # aioice retransmits a check 7 times from 500 ms on: make that quick
    monkeypatch.setattr(stun, "RETRY_MAX", 1)
    monkeypatch.setattr(stun, "RETRY_RTO", 0.05)

    async def scenario() -> str:
        a, b = await _ice_pair()
        await b.close()
        try:
            with pytest.raises(ConnectionError) as failed:
                await a.connect()
            return str(failed.value)
        finally:
            await a.close()

    assert run(scenario(), timeout=40) == "ICE negotiation failed"


def test_ice_pacing_is_skipped_with_an_unverified_aioice(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Another aioice version: aioice's connect() stays, and the skip is logged."""
    from aioice.ice import Connection

    original_connect = tuning.original(Connection, "connect")
    monkeypatch.setitem(tuning.VERIFIED, "aioice", ("0.0.1",))
    tuning.remove()
    try:
        with caplog.at_level("INFO", logger=tuning.__name__):
            assert "ice_pacing" not in tuning.apply(("ice_pacing",))
        assert Connection.connect is original_connect
        assert any(
            "ice_pacing skipped: installed aioice" in record.getMessage()
            for record in caplog.records
        )
    finally:
        monkeypatch.undo()
        tuning.remove()
        tuning.apply(tuning.NAMES)
    assert Connection.connect is not original_connect


_WARM_UP_PROBE = """
import sys
from rtc_signal.peers import session, tuning
lazy = "cryptography.hazmat.primitives.serialization"
before = lazy in sys.modules
tuning.warm_up()
print(before, lazy in sys.modules)
"""


@pytest.mark.parametrize("applied", [True, False], ids=["dtls_warmup", "without"])
def test_dtls_warm_up_does_the_first_contexts_lazy_work_only_when_applied(applied: bool) -> None:
    """dtls_warmup: warm_up() does the one-off work of a process's first DTLS
    context (pyOpenSSL's lazy import among it) ahead of the call; a no-op when off."""
    names = [n for n in tuning.NAMES if applied or n != "dtls_warmup"]
    env = {**os.environ, "RTC_PEER_TUNING": ",".join(names)}
    env.pop("RTC_PEER_NO_TUNING", None)
    probe = subprocess.run(
        [sys.executable, "-c", _WARM_UP_PROBE], env=env, capture_output=True, text=True, timeout=60
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split() == ["False", str(applied)]


# -- dtls_context and dcep_open -------------------------------------------------------


async def _pc_pair(
    prepare_answer: Any = None, *labels: tuple[str, bool]
) -> tuple[Any, Any, list[Any]]:
    """Two real RTCPeerConnections on 127.0.0.1 in this process; the offerer
    creates one channel per (label, ordered). ``prepare_answer(pc)`` runs on
    the answering connection once its SCTP transport exists."""
    from aiortc import RTCConfiguration, RTCPeerConnection

    from rtc_signal.peers.ice import restrict_host_addresses

    offerer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    answerer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    channels = [offerer.createDataChannel(label, ordered=ordered) for label, ordered in labels]
    with restrict_host_addresses(["127.0.0.1"]):
        await offerer.setLocalDescription(await offerer.createOffer())
        await answerer.setRemoteDescription(offerer.localDescription)
        if prepare_answer is not None:
            prepare_answer(answerer)
        await answerer.setLocalDescription(await answerer.createAnswer())
        await offerer.setRemoteDescription(answerer.localDescription)
    return offerer, answerer, channels


@pytest.mark.parametrize("name", ["dtls_context", "dcep_open", "fingerprint_cache"])
def test_setup_tweak_is_applied_with_the_verified_aiortc(name: str) -> None:
    from aiortc.rtcdtlstransport import RTCCertificate
    from aiortc.rtcpeerconnection import RTCPeerConnection

    assert name in tuning.applied()
    patched = {
        "dtls_context": [
            (RTCCertificate, "_create_ssl_context"),
            (RTCPeerConnection, "setLocalDescription"),
        ],
        "dcep_open": [(sctp.RTCSctpTransport, "_data_channel_flush")],
        "fingerprint_cache": [(RTCCertificate, "getFingerprints")],
    }[name]
    for owner, attr in patched:
        assert getattr(owner, attr) is not tuning.original(owner, attr)


@pytest.mark.parametrize("name", ["dtls_context", "dcep_open", "fingerprint_cache"])
def test_setup_tweak_is_skipped_with_an_unverified_aiortc(
    name: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Another aiortc version: aiortc's methods stay, and the skip is logged."""
    from aiortc.rtcdtlstransport import RTCCertificate

    owner, attr = {
        "dtls_context": (RTCCertificate, "_create_ssl_context"),
        "dcep_open": (sctp.RTCSctpTransport, "_data_channel_flush"),
        "fingerprint_cache": (RTCCertificate, "getFingerprints"),
    }[name]
    original_method = tuning.original(owner, attr)
    monkeypatch.setitem(tuning.VERIFIED, "aiortc", ("0.0.1",))
    tuning.remove()
    try:
        with caplog.at_level("INFO", logger=tuning.__name__):
            assert name not in tuning.apply((name,))
        assert getattr(owner, attr) is original_method
        assert any(
            f"{name} skipped: installed aiortc" in record.getMessage() for record in caplog.records
        )
    finally:
        monkeypatch.undo()
        tuning.remove()
        tuning.apply(tuning.NAMES)
    assert getattr(owner, attr) is not original_method


def test_dtls_context_is_built_after_set_local_description_and_taken_once() -> None:
    """dtls_context: one loop turn after setLocalDescription the connection's
    certificate holds its DTLS context; start() takes exactly that one, and a
    second request builds a new context as aiortc does."""
    from aiortc import RTCConfiguration, RTCPeerConnection
    from aiortc.rtcdtlstransport import SRTP_PROFILES

    from rtc_signal.peers.ice import restrict_host_addresses

    async def scenario() -> None:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            pc.createDataChannel("x")
            with restrict_host_addresses(["127.0.0.1"]):
                await pc.setLocalDescription(await pc.createOffer())
            await asyncio.sleep(0)  # the turn the preparation was scheduled for
            transport = pc.sctp.transport
            cert = transport._RTCDtlsTransport__local_certificate
            prepared = dict(cert.__dict__.get("_tuning_contexts", {}))
            assert len(prepared) == 1
            (context,) = prepared.values()
            assert cert._create_ssl_context(srtp_profiles=SRTP_PROFILES) is context
            again = cert._create_ssl_context(srtp_profiles=SRTP_PROFILES)
            assert again is not context
        finally:
            await pc.close()

    run(scenario(), timeout=30)


def test_dcep_open_opens_an_ordered_channel_before_the_ack_and_keeps_order() -> None:
    """dcep_open: with the answerer's DATA_CHANNEL_ACKs dropped, the offerer's
    ordered channel opens anyway and its first messages arrive, in order, on
    the channel the OPEN created; its unordered channel still waits for the ACK."""

    def drop_acks(pc: Any) -> None:
        transport = pc.sctp
        flush = type(transport)._data_channel_flush

        async def flush_without_acks() -> None:
            queue = transport._data_channel_queue
            for entry in list(queue):
                if entry[1] == sctp.WEBRTC_DCEP and entry[2] == bytes((sctp.DATA_CHANNEL_ACK,)):
                    queue.remove(entry)
            await flush(transport)

        transport._data_channel_flush = flush_without_acks

    async def scenario() -> tuple[list[str], str, str]:
        offerer, answerer, (ordered, unordered) = await _pc_pair(
            drop_acks, ("ordered", True), ("unordered", False)
        )
        received: asyncio.Queue[str] = asyncio.Queue()
        answerer.on(
            "datachannel",
            lambda dc: dc.on("message", lambda m: received.put_nowait(f"{dc.label}:{m}")),
        )
        opened = asyncio.Event()
        ordered.on("open", opened.set)
        try:
            async with asyncio.timeout(20):
                await opened.wait()
                for n in range(3):
                    ordered.send(str(n))
                got = [await received.get() for _ in range(3)]
            return got, ordered.readyState, unordered.readyState
        finally:
            await offerer.close()
            await answerer.close()

    got, ordered_state, unordered_state = run(scenario(), timeout=40)
    assert got == ["ordered:0", "ordered:1", "ordered:2"]
    assert ordered_state == "open"
    assert unordered_state == "connecting"


def test_fingerprint_cache_returns_aiortcs_fingerprints_as_new_objects() -> None:
    """fingerprint_cache: every call returns fingerprints equal to aiortc's own
    (each digest algorithm), as new objects, hashing the certificate only once."""
    from aiortc.rtcdtlstransport import RTCCertificate

    certificate = RTCCertificate.generateCertificate()
    expected = tuning.original(RTCCertificate, "getFingerprints")(certificate)
    first = certificate.getFingerprints()
    assert "_tuning_fingerprints" in certificate.__dict__  # computed once, kept
    second = certificate.getFingerprints()
    assert first == second == expected
    assert len(expected) == 3
    assert all(a is not b for a, b in zip(first, second, strict=True))
    other = RTCCertificate.generateCertificate()
    assert other.getFingerprints() != first  # per certificate, not per process


# -- spare_certificate -----------------------------------------------------------------


def _generate_certificate() -> Any:
    """RTCCertificate.generateCertificate as stored on the class (a classmethod
    object: ``getattr`` would give a new bound method each time)."""
    from aiortc.rtcdtlstransport import RTCCertificate

    return RTCCertificate.__dict__["generateCertificate"]


def _certificate_class() -> Any:
    from aiortc.rtcdtlstransport import RTCCertificate

    return RTCCertificate


@pytest.fixture
def no_spare() -> Iterator[None]:
    """No spare certificate left over from earlier tests, none left behind."""
    tuning._Spare.certificate = None
    yield
    tuning._Spare.certificate = None


def test_spare_certificate_is_applied_and_undone_by_remove(no_spare: None) -> None:
    """spare_certificate replaces generateCertificate while applied; remove()
    puts aiortc's back, drops the spare, and prepare_spare() then does nothing."""
    assert "spare_certificate" in tuning.applied()
    patched = _generate_certificate()
    original_method = tuning.original(_certificate_class(), "generateCertificate")
    assert patched is not original_method
    tuning.prepare_spare()
    assert tuning._Spare.certificate is not None
    tuning.remove()
    try:
        assert _generate_certificate() is original_method
        assert tuning._Spare.certificate is None
        tuning.prepare_spare()
        assert tuning._Spare.certificate is None
    finally:
        tuning.apply(tuning.NAMES)
    assert _generate_certificate() is not original_method


def test_spare_certificate_is_skipped_with_an_unverified_aiortc(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, no_spare: None
) -> None:
    """Another aiortc version: aiortc's generateCertificate stays, no spare is made."""
    original_method = tuning.original(_certificate_class(), "generateCertificate")
    monkeypatch.setitem(tuning.VERIFIED, "aiortc", ("0.0.1",))
    tuning.remove()
    try:
        with caplog.at_level("INFO", logger=tuning.__name__):
            assert "spare_certificate" not in tuning.apply(("spare_certificate",))
        assert _generate_certificate() is original_method
        tuning.prepare_spare()
        assert tuning._Spare.certificate is None
        assert any(
            "spare_certificate skipped: installed aiortc" in record.getMessage()
            for record in caplog.records
        )
    finally:
        monkeypatch.undo()
        tuning.remove()
        tuning.apply(tuning.NAMES)
    assert _generate_certificate() is not original_method


def test_the_spare_certificate_is_made_ahead_with_its_context_and_handed_out_once(
    no_spare: None,
) -> None:
    """prepare_spare() makes one certificate with its fingerprints and DTLS
    context ready; the next generateCertificate() returns it, the one after a
    new certificate; prepare_spare() keeps an existing spare."""
    from aiortc.rtcdtlstransport import RTCCertificate

    tuning.prepare_spare()
    spare = tuning._Spare.certificate
    assert isinstance(spare, RTCCertificate)
    assert "_tuning_fingerprints" in spare.__dict__
    assert len(spare.__dict__["_tuning_contexts"]) == 1
    tuning.prepare_spare()
    assert tuning._Spare.certificate is spare
    assert RTCCertificate.generateCertificate() is spare
    assert tuning._Spare.certificate is None
    fresh = RTCCertificate.generateCertificate()
    assert fresh is not spare
    assert fresh.getFingerprints() != spare.getFingerprints()


def test_a_stale_spare_certificate_is_not_handed_out(
    monkeypatch: pytest.MonkeyPatch, no_spare: None
) -> None:
    """A spare older than SPARE_MAX_AGE is dropped: a new certificate is made."""
    from aiortc.rtcdtlstransport import RTCCertificate

    tuning.prepare_spare()
    spare = tuning._Spare.certificate
    assert spare is not None
    monkeypatch.setattr(tuning._Spare, "made", tuning._Spare.made - tuning.SPARE_MAX_AGE - 1)
    assert RTCCertificate.generateCertificate() is not spare
    assert tuning._Spare.certificate is None


@pytest.mark.parametrize("tuning_state", ["on", "off"], indirect=True)
def test_a_connection_opens_with_a_spare_certificate_or_without_the_tweak(
    tuning_state: None, no_spare: None
) -> None:
    """Two real connections: the offerer gets the spare certificate when the
    tweak is on (and its DTLS, which checks the fingerprint sent in the SDP
    against that certificate, completes); without the tweak, as aiortc does."""
    tuning.prepare_spare()  # a no-op when the tweak is off
    spare = tuning._Spare.certificate
    assert (spare is not None) == ("spare_certificate" in tuning.applied())

    async def scenario() -> tuple[Any, str]:
        offerer, answerer, (channel,) = await _pc_pair(None, ("spare", True))
        opened = asyncio.Event()
        channel.on("open", opened.set)
        try:
            async with asyncio.timeout(20):
                await opened.wait()
            certificate = offerer.sctp.transport._RTCDtlsTransport__local_certificate
            return certificate, channel.readyState
        finally:
            await offerer.close()
            await answerer.close()

    certificate, state = run(scenario(), timeout=40)
    assert state == "open"
    if spare is not None:
        assert certificate is spare


def test_an_answer_peer_prepares_a_spare_certificate_when_registered_and_after_a_call(
    no_spare: None,
) -> None:
    """AnswerPeer makes a spare certificate once registered and a new one once
    a call's channel is open; call() takes the spare for its own connection
    (caller and answer peer share this process: the caller takes the first)."""

    async def scenario() -> tuple[Any, Any, Any]:
        async with running_server() as srv:
            config = PeerConfig(signal_url=srv.url, ice=ICE, connect_timeout=10)
            peer = AnswerPeer(config, "spare-answer")

            async def handler(c: Call) -> None:
                await c.channel.send("hi")

            serving = asyncio.create_task(peer.serve(handler, max_calls=1))
            await peer.wait_registered(10)
            registered = tuning._Spare.certificate
            async with call(config, "spare-answer") as c:
                used = c.pc.sctp.transport._RTCDtlsTransport__local_certificate
                assert await asyncio.wait_for(c.channel.receive(), 10) == "hi"
            await asyncio.wait_for(serving, 10)
            return registered, used, tuning._Spare.certificate

    registered, used, after = run(scenario(), timeout=60)
    assert registered is not None
    assert used is registered
    assert after is not None and after is not registered


# -- lazy_srtp --------------------------------------------------------------------------


def _dtls_class() -> Any:
    from aiortc.rtcdtlstransport import RTCDtlsTransport

    return RTCDtlsTransport


def test_lazy_srtp_is_applied_and_undone_by_remove() -> None:
    """lazy_srtp replaces RTCDtlsTransport._setup_srtp while applied; remove()
    puts aiortc's back (and apply() the tweak again)."""
    owner = _dtls_class()
    original_method = tuning.original(owner, "_setup_srtp")
    assert "lazy_srtp" in tuning.applied()
    assert owner._setup_srtp is not original_method
    tuning.remove()
    try:
        assert owner._setup_srtp is original_method
    finally:
        tuning.apply(tuning.NAMES)
    assert owner._setup_srtp is not original_method


def test_lazy_srtp_is_skipped_with_an_unverified_aiortc(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Another aiortc version: aiortc's _setup_srtp stays, and the skip is logged."""
    owner = _dtls_class()
    original_method = tuning.original(owner, "_setup_srtp")
    monkeypatch.setitem(tuning.VERIFIED, "aiortc", ("0.0.1",))
    tuning.remove()
    try:
        with caplog.at_level("INFO", logger=tuning.__name__):
            assert "lazy_srtp" not in tuning.apply(("lazy_srtp",))
        assert owner._setup_srtp is original_method
        assert any(
            "lazy_srtp skipped: installed aiortc" in record.getMessage()
            for record in caplog.records
        )
    finally:
        monkeypatch.undo()
        tuning.remove()
        tuning.apply(tuning.NAMES)


@pytest.mark.parametrize("tuning_state", ["on", "off"], indirect=True)
def test_srtp_keys_match_across_a_real_handshake_with_or_without_lazy_srtp(
    tuning_state: None,
) -> None:
    """After a real DTLS handshake between two connections, an RTP and an RTCP
    packet protected by one side are unprotected by the other, both ways (the
    keys and roles are aiortc's); with lazy_srtp no libsrtp session exists
    before that first packet."""
    rtp = bytes([0x80, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 42]) + b"payload"
    rtcp = bytes([0x80, 200, 0, 6, 0, 0, 0, 42]) + bytes(20)  # a sender report

    async def scenario() -> list[bool]:
        offerer, answerer, (channel,) = await _pc_pair(None, ("srtp", True))
        opened = asyncio.Event()
        channel.on("open", opened.set)
        try:
            async with asyncio.timeout(20):
                await opened.wait()
            one = offerer.sctp.transport
            other = answerer.sctp.transport
            lazy = [isinstance(t._tx_srtp, tuning._LazySrtpSession) for t in (one, other)]
            if all(lazy):
                assert one._tx_srtp._session is None and other._rx_srtp._session is None
            for sender, receiver in ((one, other), (other, one)):
                assert receiver._rx_srtp.unprotect(sender._tx_srtp.protect(rtp)) == rtp
                assert receiver._rx_srtp.unprotect_rtcp(sender._tx_srtp.protect_rtcp(rtcp)) == rtcp
            return lazy
        finally:
            await offerer.close()
            await answerer.close()

    lazy = run(scenario(), timeout=40)
    assert lazy == ["lazy_srtp" in tuning.applied()] * 2
