"""Data-channel and call set-up speed-ups for aiortc/aioice, applied at run time (no fork).

(Set-up: ``ice_pacing``, ``dtls_warmup``, ``dtls_context``, ``dcep_open``,
``fingerprint_cache``, ``spare_certificate`` and ``lazy_srtp``, sections 8 to
14 below; the rest
of this docstring is about the data path.)

aiortc's SCTP and DTLS run in Python, one ~1.2 kB packet at a time, so the
data channel is CPU-bound on per-packet work. Each tweak below removes some
of that work without changing what goes on the wire beyond what the specs
already allow (RFC 9260 SCTP, RFC 8261 SCTP over DTLS, RFC 7983 demux), so
other stacks (Chromium, pion, ...) interoperate with us as before: checked
against libwebrtc, see below.

Rules:

- Every tweak replaces or wraps a few methods of one aiortc/aioice class,
  keeps the originals, and is applied only when the installed version is one whose
  source the tweak was checked against (:data:`VERIFIED`); otherwise it is
  skipped (logged at INFO) and aiortc runs unchanged.
- :func:`apply` is called once by :mod:`peers.session` on import; it is
  idempotent. ``RTC_PEER_NO_TUNING=1`` switches everything off;
  ``RTC_PEER_TUNING=name,name`` applies only the named tweaks (for measuring
  one at a time, see ``benchmarks/speed.py``). :func:`remove` undoes them.
- The patches are process-wide: every RTCPeerConnection of the process gets
  them, not only those made by :mod:`peers`.

Measured with ``benchmarks/speed.py`` (two peer processes over loopback on
a shared 2-core VM; medians of 5 runs; ``Channel.send`` of 64 KiB messages)::

    run                       asyncio off -> on    uvloop off -> on
    quiet machine (1)         19.2 -> 36.7 MB/s    21.9 -> 45.4 MB/s
    quiet machine (2)         21.4 -> 41.4 MB/s    28.1 -> 56.4 MB/s
    others using 40-98% CPU   16.5 -> 18.1 MB/s    14.4 -> 38.8 MB/s
    CPU ms per MB, sender/receiver (1)   51/47 -> 25/27      45/42 -> 21/21

(16 KiB messages: much the same.) Run (2) had a slightly earlier
delayed_sack without the stream rule, which changes nothing in bulk
transfers. Round trip of 32-byte messages (1,000 a run): 330 -> 267 us on
asyncio, 316 -> 231 us on uvloop. What each tweak is worth, as the drop when
it alone is left out (uvloop, 64 KiB, quiet machine; measured with UDP
receive buffers raised to 4 MiB so that no packet was lost in any run, since
losses make single runs vary by +-30%; that buffer tweak itself was then
dropped, see below)::

    left out        MB/s (all on: 61.7)   CPU ms/MB sender / receiver (16.1 / 15.7)
    stun_demux      56.1                  17.5 / 16.9
    delayed_sack    46.7                  21.4 / 20.5
    transmit_scan   41.9                  23.7 / 21.4
    ack_point       58.3                  16.8 / 16.6
    reassembly      52.2                  18.3 / 19.1
    dtls_direct     49.2                  20.0 / 20.1

Interoperability was checked against libwebrtc (Chromium's WebRTC stack,
through the Node binding @roamhq/wrtc 0.10.0) on the VM's own address: 20 MB
of 64 KiB messages each way, every byte delivered in order, tuning on and off,
asyncio and uvloop (aiortc -> libwebrtc 18-32 MB/s tuned vs 12-21 untuned;
libwebrtc -> aiortc 14-43 vs 11-20).

``rto_min`` only matters when packets are lost: 5 MiB through 10 % random
loss (tests/netns, NAT -> public) took 14.0 / 19.5 / 16.0 s without it and
4.8 / 5.5 / 5.7 s with it, in the same session.

Tried and left out:

- a bigger UDP receive buffer (SO_RCVBUF 4 MiB instead of aioice's 256 KiB):
  +22% between two aiortc peers, whose receiver then drops no DATA; but the
  same socket queues the SACKs coming back to a sender, and an aiortc sender
  (which takes no account of the peer's receive window, so only losses slow
  it down) sending to libwebrtc fell behind on them, lost retransmissions
  and waited for T3: one run in three at 2-15 MB/s instead of 20-45, with
  4 MiB, 1 MiB and 512 KiB alike; none under 17 MB/s without it;
- SCTP packets larger than aiortc's 1,189 bytes: the biggest lever (fewer
  packets), but Chromium reads DTLS records into a 2,048-byte buffer and
  reports a longer record as a read error, so it would break
  interoperability;
- batching the sender's datagrams with UDP GSO: a microbenchmark saves ~1 us
  of a ~4 us sendto at the 2-4 datagrams sent per SACK, a few % of the
  sender only, while the receiver is as busy;
- restarting T3 without a new timer per SACK: measured ~1%, within noise;
- other Channel.send thresholds (256 KiB to 4 MiB): no difference.

Tried for call set-up and left out (benchmarks/setup.py, same-run A/B):

- the answer sent straight from createAnswer(), before gathering, its
  candidates trickled after it (RFC 8838; the offerer learns our address from
  our first check anyway): 23.7 vs 20.9 and 27.6 vs 23.7 ms medians at load
  ~3, i.e. no gain: two more signaling messages for the offerer to take and
  acknowledge during its ICE/DTLS, and each socket write to the server can
  hand the CPU to it when the machine is busy;
- acknowledging the forwarded offer/answer to the server (which only logs
  it) after the answer / after our first ICE check instead of first (the
  write takes 0.3-0.6 ms in traces): 23.2 vs 17.7, 15.8 vs 17.6, 15.5 vs
  14.8 ms in three runs: noise, not a gain. On a calm machine, interleaved
  (3 x 10 calls each), acknowledging at once was faster: the offerer's ack
  of the answer at once 13.5/11.6/13.5 ms vs after applying it
  14.4/12.9/13.6; the answer peer's ack of the offer written with its answer
  about 1 ms slower in all three (the server handles an early ack on the
  other core meanwhile);
- gc.freeze() after start-up: only young-generation collections run during a
  set-up (0.25-0.6 ms each, ~1 per call and process); 19.6 vs 20.0 ms;
- a cheaper DTLS handshake: the flights' OpenSSL work is ~1.4 ms in all,
  mostly ECDHE and the CertificateVerify signature and check, which WebRTC
  needs; no DTLS 1.3 (one round trip less) in the installed OpenSSL build.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

log = logging.getLogger(__name__)

#: versions whose source every tweak was read against and tested with
VERIFIED: dict[str, tuple[str, ...]] = {
    "aiortc": ("1.16.0",),
    "aioice": ("0.13.0",),
    "pyOpenSSL": ("26.4.0",),
}

#: delayed SACK: the longest an acknowledgement waits for a second packet.
#: RFC 9260 section 6.2 allows up to 200 ms (and at least every 2nd packet).
SACK_DELAY = 0.02
#: delayed SACK only while DATA streams in: packets less than this apart
STREAM_GAP = 100e-6


@dataclass
class _Tweak:
    name: str
    package: str
    install: Callable[[], list[tuple[Any, str, Any]]]


_applied: dict[str, list[tuple[Any, str, Any]]] = {}


def _set(owner: Any, attr: str, value: Any, undo: list[tuple[Any, str, Any]]) -> None:
    undo.append((owner, attr, owner.__dict__.get(attr, _MISSING)))
    setattr(owner, attr, value)


_MISSING = object()
_tasks: set[asyncio.Future[None]] = set()


# -- 1. aioice: hand DTLS datagrams straight to the connection ----------------------
#
# aioice's StunProtocol.datagram_received tries to parse every datagram as
# STUN and passes it on when parsing raises ValueError: one exception per data
# packet. RFC 7983 demultiplexes by the first byte: STUN starts with 0-3, DTLS
# with 20-63, so a DTLS datagram can go to the connection without the attempt.
# Same outcome as the original for every datagram (STUN still parsed).
# Measured: +10% (56.1 -> 61.7 MB/s, see the table above).


def _install_stun_demux() -> list[tuple[Any, str, Any]]:
    from aioice.ice import StunProtocol

    original = StunProtocol.datagram_received

    def datagram_received(self: Any, data: bytes, addr: tuple[Any, ...]) -> None:
        if data and 19 < data[0] < 64:  # DTLS record (RFC 7983 section 7)
            self.receiver.data_received(data, self.local_candidate.component)
        else:
            original(self, data, addr)

    undo: list[tuple[Any, str, Any]] = []
    _set(StunProtocol, "datagram_received", datagram_received, undo)
    return undo


# -- 2. SCTP: delayed acknowledgements (RFC 9260 section 6.2) -----------------------
#
# aiortc sends a SACK for every packet that carries DATA: on the receiver one
# more DTLS record and sendto per data packet, and on the sender one more
# datagram to read and a SACK to process per data packet. RFC 9260 6.2: a SACK
# SHOULD be sent for at least every second packet and within 200 ms of an
# unacknowledged DATA chunk (what usrsctp, dcsctp and Linux do). Here a
# packet whose DATA arrived in order is acknowledged together with the next
# one, or after SACK_DELAY if none comes; the SACK is sent at once (as
# before) when there is a gap or a duplicate (6.7), for the packet after a
# SACK that reported a gap (it may fill it), for FORWARD TSN, for a
# DATA chunk with the I bit (RFC 7053), outside the ESTABLISHED state, and
# when our receive window has shrunk below half. And only while DATA
# streams in (a packet less than STREAM_GAP after the previous one): an
# isolated packet, as in request/response traffic, is acknowledged at once as
# before, because the early SACK wakes the other process up before its answer
# arrives (delaying it too cost ~40 us of a ~250 us round trip here). Wire
# format unchanged: only fewer SACKs, each acknowledging more. Measured:
# +32% (46.7 -> 61.7 MB/s); +57% when added first (23.7 -> 37.1 MB/s).


def _install_delayed_sack() -> list[tuple[Any, str, Any]]:
    from aiortc.rtcsctptransport import RTCSctpTransport

    original_send_sack = RTCSctpTransport._send_sack
    original_receive_data = RTCSctpTransport._receive_data_chunk
    original_receive_forward_tsn = RTCSctpTransport._receive_forward_tsn_chunk
    established = RTCSctpTransport.State.ESTABLISHED
    monotonic = time.monotonic
    rwnd_low = 512 * 1024  # half of aiortc's 1 MiB receive window

    async def _send_sack_now(self: Any) -> None:
        # the delay timer ran out: acknowledge what is still unacknowledged
        if (
            self._tuning_sack_pending
            and self._sack_needed
            and self._association_state == established
        ):
            self._tuning_sack_pending = 0
            with contextlib.suppress(ConnectionError):  # DTLS closed meanwhile
                await original_send_sack(self)

    def _sack_timer(self: Any) -> None:
        self._tuning_sack_timer = None
        if self._tuning_sack_pending:
            task = asyncio.ensure_future(_send_sack_now(self))
            _tasks.add(task)  # keep a reference until it is done
            task.add_done_callback(_tasks.discard)

    async def _send_sack(self: Any) -> None:
        now = monotonic()  # (not loop.time(): uvloop's has millisecond steps)
        streaming = now - self._tuning_sack_last < STREAM_GAP
        self._tuning_sack_last = now
        if (
            streaming
            and not self._tuning_sack_pending
            and not self._tuning_sack_now
            and not self._tuning_sack_gap
            and not self._sack_misordered
            and not self._sack_duplicates
            and self._association_state == established
            and self._advertised_rwnd >= rwnd_low
        ):
            self._tuning_sack_pending = 1
            self._tuning_sack_timer = self._loop.call_later(SACK_DELAY, _sack_timer, self)
            return
        self._tuning_sack_now = False
        self._tuning_sack_pending = 0
        self._tuning_sack_gap = bool(self._sack_misordered)
        if self._tuning_sack_timer is not None:
            self._tuning_sack_timer.cancel()
            self._tuning_sack_timer = None
        await original_send_sack(self)

    async def _receive_data_chunk(self: Any, chunk: Any) -> None:
        if chunk.flags & 0x08:  # I bit: the sender asks for an immediate SACK
            self._tuning_sack_now = True
        await original_receive_data(self, chunk)

    async def _receive_forward_tsn_chunk(self: Any, chunk: Any) -> None:
        self._tuning_sack_now = True
        await original_receive_forward_tsn(self, chunk)

    undo: list[tuple[Any, str, Any]] = []
    _set(RTCSctpTransport, "_tuning_sack_pending", 0, undo)
    _set(RTCSctpTransport, "_tuning_sack_now", False, undo)
    _set(RTCSctpTransport, "_tuning_sack_timer", None, undo)
    _set(RTCSctpTransport, "_tuning_sack_gap", False, undo)
    _set(RTCSctpTransport, "_tuning_sack_last", float("-inf"), undo)
    _set(RTCSctpTransport, "_send_sack", _send_sack, undo)
    _set(RTCSctpTransport, "_receive_data_chunk", _receive_data_chunk, undo)
    _set(RTCSctpTransport, "_receive_forward_tsn_chunk", _receive_forward_tsn_chunk, undo)
    return undo


# -- 3. SCTP sender: no scan of every chunk in flight per transmit ------------------
#
# RTCSctpTransport._transmit (run for every SACK and every message) first walks
# the whole sent queue looking for chunks marked for retransmission; with a
# congestion window of hundreds of packets that walk is the sender's biggest
# single cost. Chunks are only ever marked in two places: gap-block strikes
# while handling a SACK that has gap blocks, and T3 expiry. Both are wrapped
# to raise a flag; while the flag is down the walk would find nothing, so
# _transmit goes straight to new data (the same code as the original's second
# half). With the flag up, or a FORWARD TSN to send, the original runs, and
# the flag stays up while any chunk is still marked. Measured: +47%
# (41.9 -> 61.7 MB/s).


def _install_transmit_scan() -> list[tuple[Any, str, Any]]:
    from aiortc import rtcsctptransport as sctp

    cls = sctp.RTCSctpTransport
    original_transmit = cls._transmit
    original_receive_sack = cls._receive_sack_chunk
    original_t3_expired = cls._t3_expired
    mtu = sctp.USERDATA_MAX_LENGTH

    async def _transmit(self: Any) -> None:
        if self._tuning_rtx or self._forward_tsn_chunk is not None:
            await original_transmit(self)
            self._tuning_rtx = any(chunk._retransmit for chunk in self._sent_queue)
            return
        # limit burst size (as the original)
        burst_size = 4 * mtu if self._fast_recovery_exit is None else 2 * mtu
        cwnd = min(self._flight_size + burst_size, self._cwnd)
        outbound, sent = self._outbound_queue, self._sent_queue
        while outbound and self._flight_size < cwnd:
            chunk = outbound.popleft()
            sent.append(chunk)
            self._flight_size_increase(chunk)
            chunk._sent_count += 1
            chunk._sent_time = time.time()
            await self._send_chunk(chunk)
            if not self._t3_handle:
                self._t3_start()

    async def _receive_sack_chunk(self: Any, chunk: Any) -> None:
        if chunk.gaps:  # gap blocks may strike chunks for fast retransmit
            self._tuning_rtx = True
        await original_receive_sack(self, chunk)

    def _t3_expired(self: Any) -> None:
        self._tuning_rtx = True  # every outstanding chunk gets marked
        original_t3_expired(self)

    undo: list[tuple[Any, str, Any]] = []
    _set(cls, "_tuning_rtx", False, undo)
    _set(cls, "_transmit", _transmit, undo)
    _set(cls, "_receive_sack_chunk", _receive_sack_chunk, undo)
    _set(cls, "_t3_expired", _t3_expired, undo)
    return undo


# -- 4. SCTP sender: Advanced.Peer.Ack.Point only when something was abandoned ------
#
# _update_advanced_peer_ack_point (RFC 3758, partial reliability) runs for
# every SACK and rebuilds a dict each time. When nothing was abandoned (no
# abandoned chunk at the head of either queue, no stream waiting in a
# FORWARD TSN) all it does is move the ack point up to the cumulative TSN;
# only that is done then, the original runs otherwise. Measured: +2-6%
# (58.3 -> 61.7 MB/s; 4% less sender CPU per MB).


def _install_ack_point() -> list[tuple[Any, str, Any]]:
    from aiortc import rtcsctptransport as sctp
    from aiortc.utils import uint32_gt

    cls = sctp.RTCSctpTransport
    original = cls._update_advanced_peer_ack_point

    def _update_advanced_peer_ack_point(self: Any) -> None:
        if (
            self._forward_tsn_streams
            or (self._sent_queue and self._sent_queue[0]._abandoned)
            or (self._outbound_queue and self._outbound_queue[0]._abandoned)
            or uint32_gt(self._advanced_peer_ack_tsn, self._last_sacked_tsn)
        ):
            original(self)
        elif uint32_gt(self._last_sacked_tsn, self._advanced_peer_ack_tsn):
            self._advanced_peer_ack_tsn = self._last_sacked_tsn

    undo: list[tuple[Any, str, Any]] = []
    _set(cls, "_update_advanced_peer_ack_point", _update_advanced_peer_ack_point, undo)
    return undo


# -- 5. SCTP receiver: no rescan of the reassembly queue per fragment ---------------
#
# InboundStream.pop_messages walks the stream's whole reassembly queue after
# every DATA chunk, so a message of n fragments costs O(n^2) (a 64 KiB message
# is 57 fragments). After a complete walk nothing is left to deliver; if the
# only change since is one chunk appended at the end that is not a message's
# last fragment (the normal in-order case), the walk would again deliver
# nothing, so it is skipped. Anything else (a chunk inserted earlier, a
# pruned queue, a changed sequence number) walks as before. Measured: +18%
# (52.2 -> 61.7 MB/s with 64 KiB messages; less with smaller ones).


def _install_reassembly() -> list[tuple[Any, str, Any]]:
    from aiortc import rtcsctptransport as sctp

    cls = sctp.InboundStream
    original = cls.pop_messages
    last_frag = sctp.SCTP_DATA_LAST_FRAG

    def _walk(self: Any) -> Iterator[tuple[int, int, bytes]]:
        yield from original(self)
        queue = self.reassembly
        self._tuning_len = len(queue)
        self._tuning_tail = queue[-1] if queue else None
        self._tuning_seq = self.sequence_number

    def pop_messages(self: Any) -> Iterator[tuple[int, int, bytes]]:
        queue = self.reassembly
        if (
            len(queue) == self._tuning_len + 1
            and not (queue[-1].flags & last_frag)
            and self.sequence_number == self._tuning_seq
            and (len(queue) == 1 or queue[-2] is self._tuning_tail)
        ):
            self._tuning_len += 1
            self._tuning_tail = queue[-1]
            return iter(())
        return _walk(self)

    undo: list[tuple[Any, str, Any]] = []
    _set(cls, "_tuning_len", -2, undo)  # never matches before a first walk
    _set(cls, "_tuning_tail", None, undo)
    _set(cls, "_tuning_seq", -1, undo)
    _set(cls, "pop_messages", pop_messages, undo)
    return undo


# -- 6. DTLS: records through OpenSSL directly, not pyOpenSSL's wrappers -----------
#
# Every packet goes through pyOpenSSL's Connection.send/recv/bio_read, which
# allocate a buffer per call, check errors with extra OpenSSL calls, and
# raise (and catch) WantReadError after every received record when there is
# nothing to send back. Measured on this machine: encrypt + read out a
# 1.2 kB record 3.9 us through pyOpenSSL, 1.5 us with the same OpenSSL calls
# made directly; decrypt 5.5 us vs 2.8 us. The data path of
# RTCDtlsTransport (_send_data, _write_ssl, and _recv_next once the handshake
# is over) makes the same OpenSSL calls (SSL_write, BIO_read, BIO_write,
# SSL_read with the same sizes) through pyOpenSSL's cffi binding, with a
# buffer reused per transport; any failing call is handed to pyOpenSSL's own
# error handling, so errors raise exactly what they raised before. Needs
# pyOpenSSL's private binding (Connection._ssl, _from_ssl, _into_ssl), hence
# its own version check. Measured: +25% (49.2 -> 61.7 MB/s).


def _install_dtls_direct() -> list[tuple[Any, str, Any]]:
    import pylibsrtp
    from aiortc import clock
    from aiortc import rtcdtlstransport as dtls
    from aiortc.rtp import is_rtcp
    from OpenSSL import SSL

    binding: Any = importlib.import_module("OpenSSL._util")  # pyOpenSSL's cffi binding
    ffi, lib = binding.ffi, binding.lib

    cls = dtls.RTCDtlsTransport
    original_write_ssl = cls._write_ssl
    original_recv_next = cls._recv_next
    connected = dtls.State.CONNECTED
    size = 1500  # aiortc's bio_read/recv size

    def _buffer(self: Any) -> Any:
        buf = self._tuning_buf
        if buf is None:
            buf = self._tuning_buf = ffi.new("char[]", size)
        return buf

    async def _write_ssl(self: Any) -> None:
        conn = self._ssl
        buf = self._tuning_buf or _buffer(self)
        n = lib.BIO_read(conn._from_ssl, buf, size)
        if n <= 0:
            bio = conn._from_ssl
            if lib.BIO_should_retry(bio) and lib.BIO_should_read(bio):
                return  # nothing to send (pyOpenSSL: WantReadError, ignored by aiortc)
            await original_write_ssl(self)  # any other case: as before
            return
        await self.transport._send(ffi.buffer(buf, n)[:])
        self._RTCDtlsTransport__tx_bytes += n
        self._RTCDtlsTransport__tx_packets += 1

    async def _send_data(self: Any, data: bytes) -> None:
        if self._state != connected:
            raise ConnectionError("Cannot send encrypted data, not connected")
        conn = self._ssl
        n = lib.SSL_write(conn._ssl, data, len(data))
        if n <= 0:
            conn._raise_ssl_error(conn._ssl, n)
        await self._write_ssl()

    async def _recv_next(self: Any) -> None:
        if not self._RTCDtlsTransport__handshake_done:
            await original_recv_next(self)  # handshake timeouts: as before
            return
        data = await self.transport._recv()
        self._RTCDtlsTransport__rx_bytes += len(data)
        self._RTCDtlsTransport__rx_packets += 1
        first_byte = data[0]
        if first_byte > 19 and first_byte < 64:
            conn = self._ssl
            n = lib.BIO_write(conn._into_ssl, data, len(data))
            if n <= 0:
                conn._handle_bio_errors(conn._into_ssl, n)
            buf = self._tuning_buf or _buffer(self)
            n = lib.SSL_read(conn._ssl, buf, size)
            plain: bytes | None
            if n > 0:
                plain = ffi.buffer(buf, n)[:]
            else:
                try:
                    conn._raise_ssl_error(conn._ssl, n)
                    plain = b""
                except SSL.ZeroReturnError:
                    plain = None
                except SSL.Error:
                    plain = b""
            await self._write_ssl()
            if plain is None:
                self._RTCDtlsTransport__log_debug("- DTLS shutdown by remote party")
                raise ConnectionError
            if plain and self._data_receiver:
                await self._data_receiver._handle_data(plain)
        elif first_byte > 127 and first_byte < 192 and self._rx_srtp:
            # SRTP / SRTCP: unchanged (aiortc's code)
            arrival_time_ms = clock.current_ms()
            try:
                if is_rtcp(data):
                    data = self._rx_srtp.unprotect_rtcp(data)
                    await self._handle_rtcp_data(data)
                else:
                    data = self._rx_srtp.unprotect(data)
                    await self._handle_rtp_data(data, arrival_time_ms=arrival_time_ms)
            except pylibsrtp.Error as exc:
                self._RTCDtlsTransport__log_debug("x SRTP unprotect failed: %s", exc)

    undo: list[tuple[Any, str, Any]] = []
    _set(cls, "_tuning_buf", None, undo)
    _set(cls, "_write_ssl", _write_ssl, undo)
    _set(cls, "_send_data", _send_data, undo)
    _set(cls, "_recv_next", _recv_next, undo)
    return undo


# -- 7. SCTP: a shorter minimum retransmission timeout ----------------------------
#
# aiortc bounds the RTO below by RFC 9260's RTO.Min of 1 s. On loopback and
# LANs the measured RTO is a few ms, so every lost packet that fast
# retransmit cannot recover (the last ones of a burst, a lost
# retransmission) stalls the association for a full second: 5 MiB through
# 10 % loss took 18-25 s. libwebrtc's dcsctp (Chromium) uses 220 ms, just
# above the 200 ms that a peer may delay its SACK (RFC 9260 6.2; ours waits
# SACK_DELAY), so no spurious retransmission is expected from that; RTO.Min
# is a protocol parameter the RFC lets implementations tune (section 16).

RTO_MIN = 0.22


def _install_rto_min() -> list[tuple[Any, str, Any]]:
    import aiortc.rtcsctptransport as sctp

    undo: list[tuple[Any, str, Any]] = []
    _set(sctp, "SCTP_RTO_MIN", RTO_MIN, undo)
    return undo


# -- 8. ICE: connect() returns when the check list completes, not at a pacing tick --
#
# aioice's Connection.connect() starts one connectivity check per 20 ms (the Ta
# pacing of RFC 8445 section 6.1.4.2) with ``await asyncio.sleep(0.02)`` after
# each start, and only then looks at whether the check list has completed: on
# loopback the one check succeeds within ~1 ms, yet connect() sleeps the rest
# of the 20 ms before DTLS may start, on both sides (~20 of the 31 ms set-up
# of ``rtc-peer bench``). Here the wait between two check starts is a wait
# for the check list's outcome, bounded by the same 20 ms: checks are paced
# exactly as before (one start per ICE_PACING), but connect() returns as soon
# as the list has completed or failed. The rest is aioice 0.13.0's connect()
# line for line. Nothing changes on the wire. Measured with
# ``benchmarks/setup.py`` (figures in its docstring): on a shared
# machine, medians 76.5 -> 56 ms with both set-up tweaks, minimums 48 -> 28 ms;
# two peers in one process 33 -> 13 ms.

#: seconds between two check starts (aioice's fixed pacing, kept)
ICE_PACING = 0.02


def _install_ice_pacing() -> list[tuple[Any, str, Any]]:
    from aioice import ice

    completed, failed = ice.ICE_COMPLETED, ice.ICE_FAILED

    async def connect(self: Any) -> None:
        if not self._local_candidates_end:
            raise ConnectionError("Local candidates gathering was not performed")
        if self.remote_username is None or self.remote_password is None:
            raise ConnectionError("Remote username or password is missing")

        # Forming candidate pairs (RFC 8445 section 6.1.2.2).
        for remote_candidate in self._remote_candidates:
            self._pair_remote_candidate(remote_candidate)
        self.sort_check_list()
        self._unfreeze_initial()

        # Handle the checks received before connect().
        for early_check in self._early_checks:
            self.check_incoming(*early_check)
        self._early_checks.clear()
        self._early_checks_done = True

        # Perform the checks, one start per ICE_PACING, until the outcome is known.
        outcome: int | None = None
        state: asyncio.Queue[int] = self._check_list_state
        while self._check_periodic():
            try:
                async with asyncio.timeout(ICE_PACING):
                    # (a cancelled Queue.get leaves the item in the queue)
                    outcome = await state.get()
            except TimeoutError:
                continue
            break

        # Wait for the check list to complete or fail (unless it already has).
        if outcome is None:
            outcome = await state.get() if self._check_list else failed

        # Cancel the remaining checks.
        for check in self._check_list:
            if check.task:
                check.task.cancel()

        if outcome != completed:
            raise ConnectionError("ICE negotiation failed")

        # Start consent freshness tests (RFC 7675).
        self._query_consent_task = asyncio.create_task(self.query_consent())

    undo: list[tuple[Any, str, Any]] = []
    _set(ice.Connection, "connect", connect, undo)
    return undo


# -- 9. DTLS: the process's first context is built while the answer is awaited -----
#
# The first DTLS context a process builds costs ~5-7 ms more than later ones:
# pyOpenSSL's use_certificate() imports cryptography's serialization modules
# on first use, and OpenSSL sets up its DTLS method. A fresh ``rtc-peer``
# process paid that inside the set-up, after ICE, on the critical path.
# :func:`warm_up` builds one throwaway context (aiortc's own
# ``_create_ssl_context``, hence the aiortc version check) at a moment the
# process would otherwise wait: right after the offer is sent (the answer
# takes longer to come back), and when an answer peer has registered. Once per
# process; nothing changes on the wire.


class _Warmup:
    enabled = False
    done = False


def _install_dtls_warmup() -> list[tuple[Any, str, Any]]:
    undo: list[tuple[Any, str, Any]] = []
    _set(_Warmup, "enabled", True, undo)
    return undo


def warm_up() -> None:
    """Build one throwaway DTLS context now (once per process), if the
    ``dtls_warmup`` tweak is applied: call it where the process is idle."""
    if not _Warmup.enabled or _Warmup.done:
        return
    _Warmup.done = True
    try:
        from aiortc.rtcdtlstransport import SRTP_PROFILES, RTCCertificate

        RTCCertificate.generateCertificate()._create_ssl_context(srtp_profiles=SRTP_PROFILES)
    except Exception as exc:  # a warm-up must never fail a call
        log.debug("DTLS warm-up failed: %r", exc)


# -- 10. DTLS: the call's own context is built while the process would wait ---------
#
# aiortc builds a DTLS transport's SSL context (certificate and key converted
# to OpenSSL's, cipher list, SRTP profiles: ~0.6-0.9 ms) inside
# RTCDtlsTransport.start(), i.e. after ICE has completed, on the critical path
# of both peers. The context depends only on the connection's certificate
# (made with the RTCPeerConnection) and the SRTP profiles, both known once the
# local description is set. Here setLocalDescription() schedules, for the next
# turn of the loop (after the description has been handed to signaling:
# the offer or answer is written first), the building of each of the
# connection's DTLS contexts with aiortc's own ``_create_ssl_context``; the
# context is kept on the certificate and taken (once) by that transport's
# start(). A context asked for with other profiles, or a second time, is built
# as before. The offer side waits for the answer and the answer side for the
# offerer's ICE check at that moment. Same context, built earlier: nothing
# changes on the wire. Worth ~0.9 ms a call (instrumented runs: the context
# took 0.9 ms after ICE on each peer, 0.03 ms with this); benchmarks/setup.py:
# 15.7 vs 16.1 ms medians of 20, within the shared machine's noise.


def _dtls_transports(pc: Any) -> list[Any]:
    """The DTLS transports of an RTCPeerConnection that have not started."""
    transports: list[Any] = []
    sctp = pc.sctp
    if sctp is not None:
        transports.append(sctp.transport)
    for transceiver in pc.getTransceivers():
        transports.append(transceiver.receiver.transport)
    unique = {id(t): t for t in transports if t is not None and t.state == "new"}
    return list(unique.values())


def _install_dtls_context() -> list[tuple[Any, str, Any]]:
    from aiortc import rtcdtlstransport as dtls
    from aiortc.rtcpeerconnection import RTCPeerConnection

    original_create = dtls.RTCCertificate._create_ssl_context
    original_set_local = RTCPeerConnection.setLocalDescription

    def _profiles_key(profiles: Any) -> tuple[bytes, ...]:
        return tuple(p.openssl_profile for p in profiles)

    def prepare_context(certificate: Any, profiles: Any) -> None:
        prepared = certificate.__dict__.setdefault("_tuning_contexts", {})
        key = _profiles_key(profiles)
        if key not in prepared:
            prepared[key] = original_create(certificate, srtp_profiles=profiles)
            _Warmup.done = True  # the process's first context is built now

    def prepare(pc: Any) -> None:
        try:
            for transport in _dtls_transports(pc):
                certificate = transport._RTCDtlsTransport__local_certificate
                prepare_context(certificate, transport._srtp_profiles)
        except Exception as exc:  # an optimisation must never fail a call
            log.debug("DTLS context preparation failed: %r", exc)

    def _create_ssl_context(self: Any, srtp_profiles: Any) -> Any:
        prepared = self.__dict__.get("_tuning_contexts")
        if prepared:
            context = prepared.pop(_profiles_key(srtp_profiles), None)
            if context is not None:
                return context
        return original_create(self, srtp_profiles=srtp_profiles)

    async def setLocalDescription(self: Any, *args: Any, **kwargs: Any) -> None:
        await original_set_local(self, *args, **kwargs)
        asyncio.get_running_loop().call_soon(prepare, self)

    undo: list[tuple[Any, str, Any]] = []
    _set(dtls.RTCCertificate, "_create_ssl_context", _create_ssl_context, undo)
    _set(RTCPeerConnection, "setLocalDescription", setLocalDescription, undo)
    _set(_Contexts, "prepare", staticmethod(prepare_context), undo)
    return undo


class _Contexts:
    #: dtls_context's preparation of one (certificate, SRTP profiles) context,
    #: while that tweak is applied (the spare certificate's context uses it)
    prepare: Callable[[Any, Any], None] | None = None


# -- 11. DCEP: the opener's ordered channel opens once DATA_CHANNEL_OPEN is sent ----
#
# aiortc opens a channel it created only when the peer's DATA_CHANNEL_ACK
# arrives: one more round trip (and the peer's processing of the OPEN) after
# the association is established. RFC 8832 section 6 lets the opener send
# user messages before the ACK; they must go ordered until the ACK so that the
# OPEN is delivered first. libwebrtc (Chromium) does exactly that: its
# channel goes to "open" as soon as the OPEN message is sent
# (SctpDataChannel: kHandshakeWaitingForAck counts as open). Here, for an
# ordered channel, the channel opens as soon as its OPEN message has been
# handed to SCTP (same stream, ordered: every user message follows it); an
# unordered channel still waits for the ACK, as before. A channel closed
# meanwhile is not opened. The ACK, when it comes, changes nothing. Wire
# format unchanged. Measured (benchmarks/setup.py, medians): 21.8 -> 20.4 ms
# (30 runs), 18.9 -> 15.7 ms (20 runs, quieter); the round trip was ~0.9 ms
# in instrumented calm runs.


def _install_dcep_open() -> list[tuple[Any, str, Any]]:
    from aiortc import rtcsctptransport as sctp

    cls = sctp.RTCSctpTransport
    original_flush = cls._data_channel_flush
    dcep, open_type = sctp.WEBRTC_DCEP, sctp.DATA_CHANNEL_OPEN

    async def _data_channel_flush(self: Any) -> None:
        opening = [
            entry
            for entry in self._data_channel_queue
            if entry[1] == dcep and entry[2][:1] == bytes((open_type,)) and entry[0].ordered
        ]
        await original_flush(self)
        for entry in opening:
            channel = entry[0]
            # handed to SCTP (left the queue: _send queues its chunks before it
            # yields, so whichever flush took it, the OPEN is ahead of any user
            # message) and neither opened by an ACK nor closed since
            queued = any(e is entry for e in self._data_channel_queue)
            if not queued and channel.readyState == "connecting":
                channel._setReadyState("open")

    undo: list[tuple[Any, str, Any]] = []
    _set(cls, "_data_channel_flush", _data_channel_flush, undo)
    return undo


# -- 12. DTLS: a certificate's fingerprints are computed once ------------------------
#
# RTCCertificate.getFingerprints() hashes the certificate with SHA-256, -384
# and -512 and formats each digest on every call, and aiortc calls it once or
# twice per createOffer/createAnswer/setLocalDescription (~0.25 ms a call):
# ~0.5 ms of the answer peer's work between receiving the offer and sending
# the answer. A certificate never changes, so the (algorithm, value) pairs are
# kept on it after the first call; each call still returns new
# RTCDtlsFingerprint objects, equal to aiortc's. Same SDP.


def _install_fingerprint_cache() -> list[tuple[Any, str, Any]]:
    from aiortc import rtcdtlstransport as dtls

    cls = dtls.RTCCertificate
    original_fingerprints = cls.getFingerprints
    fingerprint = dtls.RTCDtlsFingerprint

    def getFingerprints(self: Any) -> list[Any]:
        cached = self.__dict__.get("_tuning_fingerprints")
        if cached is None:
            cached = tuple((f.algorithm, f.value) for f in original_fingerprints(self))
            self._tuning_fingerprints = cached
        return [fingerprint(algorithm=algorithm, value=value) for algorithm, value in cached]

    undo: list[tuple[Any, str, Any]] = []
    _set(cls, "getFingerprints", getFingerprints, undo)
    return undo


# -- 13. DTLS: the next call's certificate is made while the process is idle -------
#
# RTCPeerConnection() generates its ECDSA P-256 key and self-signed certificate
# (~0.6-0.9 ms on a calm machine, several ms under load), and dtls_context then
# builds its DTLS context (~1 ms) one loop turn after setLocalDescription. On
# an answer peer both fall on the critical path: the certificate between the
# offer's arrival and the answer, and the context right when the offerer's
# first ICE check arrives and the answer peer's own first check is due (traced:
# the check's reply and our own check waited 1-3 ms for it). prepare_spare()
# makes the next connection's certificate ahead of time, with its fingerprints
# (kept by fingerprint_cache) and its DTLS context (dtls_context, when that
# tweak is applied), at moments the process would otherwise idle: an answer
# peer once registered and after each call's channel has opened, an offering
# process while it connects to the signaling server. While this tweak is
# applied RTCCertificate.generateCertificate() hands out that spare, once,
# instead of making a certificate then. Every connection still gets its own
# fresh key and certificate, used for that connection only; a spare older
# than SPARE_MAX_AGE (the certificate is valid for 30 days from a day before it
# was made) is dropped and a certificate made as before. Same SDP and DTLS.
# Measured (benchmarks/setup.py, medians): 12.7 -> 10.6 ms (15 runs, load
# ~1.6), 13.5 -> 12.5 ms (20 runs, load 4 -> 1.8); 22.4 -> 17.5 under load 6.

#: a spare certificate older than this (seconds) is not handed out
SPARE_MAX_AGE = 3600.0


class _Spare:
    enabled = False
    #: aiortc's own certificate maker (the function behind the classmethod)
    make: Callable[[Any], Any] | None = None
    certificate: Any = None
    made = 0.0


def _install_spare_certificate() -> list[tuple[Any, str, Any]]:
    from aiortc.rtcdtlstransport import RTCCertificate

    make = RTCCertificate.__dict__["generateCertificate"].__func__

    def generateCertificate(cls: Any) -> Any:
        spare, _Spare.certificate = _Spare.certificate, None
        if type(spare) is cls and time.monotonic() - _Spare.made < SPARE_MAX_AGE:
            return spare
        return make(cls)

    undo: list[tuple[Any, str, Any]] = []
    _set(RTCCertificate, "generateCertificate", classmethod(generateCertificate), undo)
    _set(_Spare, "make", staticmethod(make), undo)
    _set(_Spare, "certificate", None, undo)
    _set(_Spare, "enabled", True, undo)
    return undo


def prepare_spare() -> None:
    """Make the next connection's certificate now (with its fingerprints and
    DTLS context), if the ``spare_certificate`` tweak is applied and there is
    no spare yet: call it where the process is idle."""
    if not _Spare.enabled or _Spare.make is None or _Spare.certificate is not None:
        return
    try:
        from aiortc.rtcdtlstransport import SRTP_PROFILES, RTCCertificate

        certificate = _Spare.make(RTCCertificate)
        certificate.getFingerprints()  # kept on it by fingerprint_cache
        if _Contexts.prepare is not None:
            _Contexts.prepare(certificate, SRTP_PROFILES)
        _Spare.certificate, _Spare.made = certificate, time.monotonic()
    except Exception as exc:  # an optimisation must never fail a call
        log.debug("spare certificate failed: %r", exc)


# -- 14. DTLS: SRTP sessions are made when the first RTP or RTCP packet needs them ----
#
# When the DTLS handshake completes, aiortc's _setup_srtp() derives the SRTP
# keys (RFC 5764) and makes two libsrtp sessions (~0.25 ms together), before
# the transport reports "connected" and SCTP may start: on the critical path of
# both peers, also for a data-channel-only connection, which never sends RTP.
# Here the profile check and key derivation are aiortc's, done at the same
# moment (so a handshake without an SRTP profile still fails as before), but
# each session is made on its first protect/unprotect call, with the same
# policy (same keys, SSRC_ANY_INBOUND/OUTBOUND, allow_repeat_tx, window 1024).
# Nothing changes on the wire. Measured (benchmarks/setup.py, medians of 20,
# load 4 -> 1.8): 13.4 -> 12.5 ms; traced: 0.25 ms less on each peer between
# its last handshake flight and SCTP's INIT.


class _LazySrtpSession:
    """A pylibsrtp Session, made with aiortc's policy on first use."""

    __slots__ = ("_key", "_profile", "_session", "_ssrc_type")

    def __init__(self, key: bytes, ssrc_type: int, profile: int) -> None:
        self._key, self._ssrc_type, self._profile = key, ssrc_type, profile
        self._session: Any = None

    def _made(self) -> Any:
        if self._session is None:
            from pylibsrtp import Policy, Session

            policy = Policy(key=self._key, ssrc_type=self._ssrc_type, srtp_profile=self._profile)
            policy.allow_repeat_tx = True
            policy.window_size = 1024
            self._session = Session(policy)
        return self._session

    def protect(self, packet: bytes) -> bytes:
        result: bytes = self._made().protect(packet)
        return result

    def protect_rtcp(self, packet: bytes) -> bytes:
        result: bytes = self._made().protect_rtcp(packet)
        return result

    def unprotect(self, packet: bytes) -> bytes:
        result: bytes = self._made().unprotect(packet)
        return result

    def unprotect_rtcp(self, packet: bytes) -> bytes:
        result: bytes = self._made().unprotect_rtcp(packet)
        return result


def _install_lazy_srtp() -> list[tuple[Any, str, Any]]:
    from aiortc import rtcdtlstransport as dtls
    from pylibsrtp import Policy

    failed = dtls.State.FAILED

    def _setup_srtp(self: Any) -> None:
        # aiortc 1.16.0's _setup_srtp, but for the two Session(policy) calls
        log_debug = self._RTCDtlsTransport__log_debug
        openssl_profile = self._ssl.get_selected_srtp_profile()
        for srtp_profile in self._srtp_profiles:
            if srtp_profile.openssl_profile == openssl_profile:
                log_debug("x DTLS handshake negotiated %s", srtp_profile.openssl_profile.decode())
                break
        else:
            log_debug("x DTLS handshake failed (no SRTP profile negotiated)")
            self._set_state(failed)
            return
        view = self._ssl.export_keying_material(
            b"EXTRACTOR-dtls_srtp",
            2 * (srtp_profile.key_length + srtp_profile.salt_length),
        )
        if self._role == "server":
            tx_key = srtp_profile.get_key_and_salt(view, 1)
            rx_key = srtp_profile.get_key_and_salt(view, 0)
        else:
            tx_key = srtp_profile.get_key_and_salt(view, 0)
            rx_key = srtp_profile.get_key_and_salt(view, 1)
        libsrtp_profile = srtp_profile.libsrtp_profile
        self._rx_srtp = _LazySrtpSession(rx_key, Policy.SSRC_ANY_INBOUND, libsrtp_profile)
        self._tx_srtp = _LazySrtpSession(tx_key, Policy.SSRC_ANY_OUTBOUND, libsrtp_profile)

    undo: list[tuple[Any, str, Any]] = []
    _set(dtls.RTCDtlsTransport, "_setup_srtp", _setup_srtp, undo)
    return undo


_TWEAKS = [
    _Tweak("stun_demux", "aioice", _install_stun_demux),
    _Tweak("delayed_sack", "aiortc", _install_delayed_sack),
    _Tweak("transmit_scan", "aiortc", _install_transmit_scan),
    _Tweak("ack_point", "aiortc", _install_ack_point),
    _Tweak("reassembly", "aiortc", _install_reassembly),
    _Tweak("dtls_direct", "aiortc+pyOpenSSL", _install_dtls_direct),
    _Tweak("rto_min", "aiortc", _install_rto_min),
    _Tweak("ice_pacing", "aioice", _install_ice_pacing),
    _Tweak("dtls_warmup", "aiortc", _install_dtls_warmup),
    _Tweak("dtls_context", "aiortc", _install_dtls_context),
    _Tweak("dcep_open", "aiortc", _install_dcep_open),
    _Tweak("fingerprint_cache", "aiortc", _install_fingerprint_cache),
    _Tweak("spare_certificate", "aiortc", _install_spare_certificate),
    _Tweak("lazy_srtp", "aiortc", _install_lazy_srtp),
]
NAMES = tuple(t.name for t in _TWEAKS)


def _verified(packages: str) -> bool:
    """Whether every package of ``a+b`` is installed in a verified version."""
    for package in packages.split("+"):
        try:
            installed = version(package)
        except PackageNotFoundError:
            return False
        if installed not in VERIFIED[package]:
            return False
    return True


def apply(names: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """Apply the tweaks (all, or ``names``; by default as the environment
    says) that fit the installed versions; return the names now applied."""
    if names is None:
        if os.environ.get("RTC_PEER_NO_TUNING", "") not in ("", "0"):
            return applied()
        wanted = os.environ.get("RTC_PEER_TUNING")
        names = NAMES if wanted is None else tuple(n.strip() for n in wanted.split(",") if n)
    unknown = set(names) - set(NAMES)
    if unknown:
        log.warning("unknown tuning names ignored: %s", ", ".join(sorted(unknown)))
    for tweak in _TWEAKS:
        if tweak.name not in names or tweak.name in _applied:
            continue
        if not _verified(tweak.package):
            log.info(
                "tuning %s skipped: installed %s, verified %s",
                tweak.name,
                ", ".join(f"{p} {_installed(p)}" for p in tweak.package.split("+")),
                ", ".join(f"{p} {'/'.join(VERIFIED[p])}" for p in tweak.package.split("+")),
            )
            continue
        _applied[tweak.name] = tweak.install()
    return applied()


def _installed(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "(not installed)"


def applied() -> tuple[str, ...]:
    """Names of the tweaks in effect, in application order."""
    return tuple(n for n in NAMES if n in _applied)


def original(owner: Any, attr: str) -> Any:
    """``owner.attr`` as it was before any tweak replaced it (for tests)."""
    for undo in _applied.values():
        for patched_owner, patched_attr, old in undo:
            if patched_owner is owner and patched_attr == attr and old is not _MISSING:
                return old
    return getattr(owner, attr)


def remove() -> None:
    """Undo every tweak (for tests; connections made meanwhile keep working)."""
    for name in reversed(NAMES):
        for owner, attr, old in reversed(_applied.pop(name, [])):
            if old is _MISSING:
                delattr(owner, attr)
            else:
                setattr(owner, attr, old)
