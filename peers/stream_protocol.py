"""What chat and pipe sessions put on the data channel (sans-I/O): chat lines as
messages, and the end-of-stream handshake that gives each direction its own end.

A data channel has no half-close: closing it ends both directions. So each
direction's end is a message instead, and the channel is closed only when
both directions have ended and each end was acknowledged.

The handshake (between two ``rtc-peer`` chat/pipe peers)
-------------------------------------------------------

- The offer side opens the ``data`` channel (the label stays ``data``, so the
  Go demo, the browser page and a timer-mode ``rtc-peer answer`` still
  accept it) with the channel protocol :data:`STREAM_PROTOCOL`. That is its
  announcement.
- An answer peer in chat or pipe mode that sees :data:`STREAM_PROTOCOL` sends
  one **empty binary message first** (hello: "I speak it too"). Any other
  first message tells the offer side that the answer does not speak it.
- Each side then sends its data (pipe: non-empty binary messages; chat: text
  messages, an empty line as an empty text message), then, at the end of its
  input, **an empty binary message: its end of stream**. Nothing follows it
  but the acknowledgement below.
- A side that has received the peer's end (and written out everything before
  it) **and** sent its own end sends **one more empty binary message: its
  acknowledgement** of the peer's end. Sending the acknowledgement only after
  one's own end keeps the order on each direction fixed (hello, data, end,
  ack), so the empty messages need no other framing and the data none at all.
- A side that has both sent its acknowledgement and received the peer's is
  done: it closes the channel once the peer has received everything.
- The channel closing before the peer's end arrived means the stream was cut
  (peer killed, network gone): the receiving side reports it (exit 1 on the
  command line). Closing after our end but before its acknowledgement means
  our data may not have been written out: also an error.

Peers that do not speak it (the Go demo, the browser page, a timer-mode
``rtc-peer answer``, older ``rtc-peer``) get the old behaviour: the first side
whose input ends closes the channel once its data was delivered, and a close
is the normal end. An offer side that reaches the end of its input before it
has heard anything from the answer waits up to :data:`HELLO_TIMEOUT` for the
hello, then assumes the old behaviour.

Empty binary messages are free for this: the pipe never sends an empty data
message (there is nothing to write), and chat sends lines as text.
"""

from __future__ import annotations

import enum

#: A data-channel message (text or binary), as in peers.channel (not imported:
#: this module needs no aiortc).
Data = str | bytes

#: The data channel's protocol (RTCDataChannel.protocol, sent in DCEP's
#: DATA_CHANNEL_OPEN) announcing the end-of-stream handshake.
STREAM_PROTOCOL = "rtc-peer-stream/1"
#: Hello, end of stream and acknowledgement: each one empty binary message.
MARKER = b""
#: How long an offer side whose input has ended waits to learn whether the
#: answer speaks the handshake (the answer's hello follows the channel's
#: opening at once; a peer that does not speak it may stay silent). Generous:
#: giving up too early on a loaded machine would make the offer close as in the
#: old rules while the answer waits for its end marker (a "cut" stream).
HELLO_TIMEOUT = 10.0


class Received(enum.Enum):
    """What a message from the peer is."""

    DATA = "data"
    HELLO = "hello"
    END = "end"
    ACK = "ack"
    #: data or a marker after the peer's end of stream and acknowledgement
    #: (or data after its end): the peer broke the handshake
    VIOLATION = "violation"


class StreamEnds:
    """One side's state of the handshake. ``peer_speaks`` is True (the peer
    announced it), False (it does not: the old behaviour), or None (offer side:
    not known until the answer's first message)."""

    def __init__(self, peer_speaks: bool | None, send_hello: bool) -> None:
        self.peer_speaks = peer_speaks
        self._send_hello = send_hello
        self.end_sent = False
        self.end_received = False
        self.ack_sent = False
        self.ack_received = False
        self.bytes_received = 0

    @classmethod
    def for_offer(cls) -> StreamEnds:
        return cls(peer_speaks=None, send_hello=False)

    @classmethod
    def for_answer(cls, channel_protocol: str) -> StreamEnds:
        speaks = channel_protocol == STREAM_PROTOCOL
        return cls(peer_speaks=speaks, send_hello=speaks)

    def start(self) -> list[Data]:
        """Messages to send before any data (the answer's hello)."""
        return [MARKER] if self._send_hello else []

    def received(self, message: Data) -> Received:
        """Classify a message from the peer (and update the state)."""
        marker = isinstance(message, bytes) and not message
        if self.peer_speaks is None:  # the answer's first message
            self.peer_speaks = marker
            if marker:
                return Received.HELLO
        if not self.peer_speaks:
            self.bytes_received += len(message)
            return Received.DATA
        if not marker:
            if self.end_received:
                return Received.VIOLATION
            self.bytes_received += len(message)
            return Received.DATA
        if not self.end_received:
            self.end_received = True
            return Received.END
        if self.end_sent and not self.ack_received:
            self.ack_received = True
            return Received.ACK
        return Received.VIOLATION

    def hello_timed_out(self) -> None:
        """No word from the answer within :data:`HELLO_TIMEOUT`: the old behaviour."""
        if self.peer_speaks is None:
            self.peer_speaks = False

    def input_ended(self) -> list[Data]:
        """Our input ended: the messages to send now (our end, and our
        acknowledgement if the peer's end is already in). Only when the peer
        speaks the handshake (callers check :attr:`peer_speaks` first)."""
        assert self.peer_speaks, "the peer does not speak the end-of-stream handshake"
        self.end_sent = True
        return [MARKER, *self.take_ack()]

    def take_ack(self) -> list[Data]:
        """Our acknowledgement, once it is due (at most once)."""
        if self.end_sent and self.end_received and not self.ack_sent:
            self.ack_sent = True
            return [MARKER]
        return []

    @property
    def finished(self) -> bool:
        """Both directions ended and acknowledged: time to close."""
        return self.ack_sent and self.ack_received

    def close_error(self, peer: str) -> str | None:
        """Why a close now is not a normal end (None if it is)."""
        if not self.peer_speaks:
            return None  # the old behaviour: a close is the end
        if not self.end_received:
            return (
                f"the stream from {peer} was cut after {self.bytes_received} bytes, "
                "before its end marker (the peer went away or closed the channel early)"
            )
        if self.end_sent and not self.ack_received:
            return (
                f"the data channel closed before {peer} acknowledged the end of our "
                "stream: it may not have received everything"
            )
        if not self.end_sent:
            return f"{peer} closed the data channel before the end of our input"
        return None


class LineSplitter:
    """Cuts a byte stream into lines (without their ``\\n`` or ``\\r\\n``),
    and lines longer than ``limit`` bytes into pieces, so that memory stays
    bounded however long a line is."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._pending = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._pending += data
        lines: list[bytes] = []
        while True:
            end = self._pending.find(b"\n")
            stop = end if end >= 0 else len(self._pending)
            # Without its \r (also a \r still waiting for its \n).
            length = stop - 1 if stop > 0 and self._pending[stop - 1] == 0x0D else stop
            if length > self.limit:  # too long for one message: a piece now
                cut = _utf8_boundary(self._pending, self.limit)
                lines.append(bytes(self._pending[:cut]))
                del self._pending[:cut]
            elif end >= 0:
                lines.append(bytes(self._pending[:length]))
                del self._pending[: end + 1]
            else:
                return lines

    def finish(self) -> bytes | None:
        """The last line if the input did not end with a line ending."""
        if not self._pending:
            return None
        line, self._pending = bytes(self._pending), bytearray()
        return line


def _utf8_boundary(data: bytearray, limit: int) -> int:
    """A cut at most ``limit`` bytes in that does not split a UTF-8 character
    (continuation bytes are 0b10xxxxxx; a character has at most 3 of them)."""
    cut = limit
    while cut > limit - 3 and data[cut] & 0xC0 == 0x80:
        cut -= 1
    return cut
