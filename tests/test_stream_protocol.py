"""The chat/pipe end-of-stream handshake as a pure state machine
(peers.stream_protocol): hello, end, acknowledgement, and what a close means."""

from __future__ import annotations

from rtc_signal.peers.stream_protocol import (
    MARKER,
    STREAM_PROTOCOL,
    Received,
    StreamEnds,
)


def test_answer_that_sees_the_protocol_says_hello_and_a_plain_channel_gets_none() -> None:
    """The answer's hello goes first only when the offer announced the handshake."""
    assert StreamEnds.for_answer(STREAM_PROTOCOL).start() == [MARKER]
    plain = StreamEnds.for_answer("")
    assert plain.start() == [] and plain.peer_speaks is False


def test_offer_learns_from_the_first_message_whether_the_answer_speaks_it() -> None:
    """An empty binary first is the hello; anything else means the old rules."""
    speaking = StreamEnds.for_offer()
    assert speaking.received(b"") is Received.HELLO and speaking.peer_speaks is True
    assert speaking.received(b"data") is Received.DATA
    plain = StreamEnds.for_offer()
    assert plain.received("answer-1") is Received.DATA and plain.peer_speaks is False
    assert plain.received(b"") is Received.DATA  # an empty message, nothing more
    assert plain.close_error("'x'") is None  # without the handshake a close is the end


def test_ack_follows_our_own_end_so_each_direction_reads_hello_data_end_ack() -> None:
    """The peer's end before ours: our ack goes out with our end; the peer's ack
    finishes the session."""
    ends = StreamEnds.for_answer(STREAM_PROTOCOL)
    ends.start()
    assert ends.received(b"abc") is Received.DATA
    assert ends.received(b"") is Received.END
    assert ends.take_ack() == []  # not before our own end
    assert ends.input_ended() == [MARKER, MARKER]  # our end, then our ack
    assert not ends.finished
    assert ends.received(b"") is Received.ACK
    assert ends.finished and ends.close_error("'x'") is None
    assert ends.bytes_received == 3


def test_our_end_first_then_the_peers_end_then_ack_both_ways() -> None:
    """Our end first: the peer's end makes our ack due at once."""
    ends = StreamEnds.for_answer(STREAM_PROTOCOL)
    assert ends.input_ended() == [MARKER]
    assert ends.received(b"") is Received.END
    assert ends.take_ack() == [MARKER] and ends.take_ack() == []
    assert ends.received(b"") is Received.ACK and ends.finished


def test_a_close_before_the_peers_end_is_a_cut_stream() -> None:
    """A close before the end marker names the bytes received and says 'cut'."""
    ends = StreamEnds.for_answer(STREAM_PROTOCOL)
    ends.received(b"12345")
    error = ends.close_error("'sender'")
    assert error is not None and "cut after 5 bytes" in error and "'sender'" in error


def test_a_close_before_our_end_was_acknowledged_is_an_error() -> None:
    """Our end sent, the peer's end in, but no ack before the close: an error."""
    ends = StreamEnds.for_answer(STREAM_PROTOCOL)
    ends.input_ended()
    ends.received(b"")
    error = ends.close_error("'receiver'")
    assert error is not None and "acknowledged" in error


def test_data_or_markers_after_the_end_break_the_handshake() -> None:
    """Data after the peer's end, or a marker after its ack, is a violation."""
    ends = StreamEnds.for_answer(STREAM_PROTOCOL)
    ends.received(b"")
    assert ends.received(b"late") is Received.VIOLATION
    ends.input_ended()
    assert ends.received(b"") is Received.ACK
    assert ends.received(b"") is Received.VIOLATION


def test_hello_timeout_falls_back_to_the_old_rules() -> None:
    """An offer that heard nothing from the answer assumes the old rules."""
    ends = StreamEnds.for_offer()
    ends.hello_timed_out()
    assert ends.peer_speaks is False and ends.close_error("'x'") is None
