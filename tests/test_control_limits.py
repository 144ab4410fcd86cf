"""Control requests are bounded before the JSON parser runs: size in UTF-8
bytes, nesting depth, valid text; every failure is a ControlError."""

from __future__ import annotations

import json
import time

import pytest

from rtc_signal.peers.media.server import MediaServer
from rtc_signal.proto.control import (
    MAX_DEPTH,
    MAX_REQUEST,
    ControlError,
    Ping,
    parse_request,
)

#: a refusal must not cost the peer more than this (seconds), however bad the input
FAST = 0.5


def refused(message: str | bytes) -> ControlError:
    """The ControlError ``message`` raises, timed: it must come fast."""
    started = time.perf_counter()
    with pytest.raises(ControlError) as caught:
        parse_request(message)
    assert time.perf_counter() - started < FAST
    return caught.value


@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_100000_deep_nesting_is_a_control_error_fast(opener: str) -> None:
    """100,000-deep arrays/objects give a ControlError (no RecursionError), fast."""
    closer = "]" if opener == "[" else "}"
    error = refused(opener * 100_000 + closer * 100_000)
    assert error.request_id is None and "too long" in str(error)


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 999, 2000])
def test_nesting_deeper_than_the_limit_within_the_size_is_refused_before_parsing(
    depth: int,
) -> None:
    """Deep nesting that fits in MAX_REQUEST is refused by the depth scan, not the parser."""
    message = '{"cmd": "ping", "id": 7, "t": 1, "x": ' + "[" * depth + "]" * depth + "}"
    assert len(message) <= MAX_REQUEST
    error = refused(message)
    assert error.request_id is None and f"deeper than {MAX_DEPTH} levels" in str(error)


def test_nesting_up_to_the_limit_is_accepted() -> None:
    """MAX_DEPTH levels (the request object included) still parse."""
    inner = MAX_DEPTH - 1
    request = parse_request(
        '{"cmd": "ping", "id": 7, "t": 1, "x": ' + "[" * inner + "]" * inner + "}"
    )
    assert isinstance(request, Ping) and request.id == 7


def test_brackets_inside_strings_do_not_count() -> None:
    """'[' and '{' inside JSON strings (escaped quotes too) are not nesting."""
    noise = '[{\\"' * 500
    request = parse_request(json.dumps({"cmd": "ping", "id": 8, "t": 1, "note": noise}))
    assert isinstance(request, Ping) and request.id == 8


def test_oversized_messages_are_refused_by_their_utf8_length() -> None:
    """The size limit counts UTF-8 bytes: 2,000 'é' (4,000 bytes) pass, 2,100 (4,200) do not."""

    def with_padding(pad: str) -> str:
        return json.dumps({"cmd": "ping", "id": 9, "t": 1, "pad": pad}, ensure_ascii=False)

    fits = with_padding("é" * 2000)
    assert len(fits.encode()) <= MAX_REQUEST
    assert isinstance(parse_request(fits), Ping)
    too_big = with_padding("é" * 2100)
    assert len(too_big) <= MAX_REQUEST < len(too_big.encode())
    error = refused(too_big)
    assert "too long" in str(error) and f"> {MAX_REQUEST} bytes" in str(error)
    assert "too long" in str(refused("x" * 10_000_000))


@pytest.mark.parametrize(
    "message",
    [
        b"\xff\xfe{",
        b'{"cmd": "ping", "id": 1, "t": 1}',
        '{"cmd": "ping", "id": 1, "t": 1, "x": "\udcff"}',  # a lone surrogate (surrogateescape)
    ],
)
def test_invalid_utf8_and_binary_messages_are_control_errors(message: str | bytes) -> None:
    """Binary messages and text that is not valid UTF-8 give a ControlError, fast."""
    error = refused(message)
    assert error.request_id is None
    assert "binary" in str(error) or "valid UTF-8" in str(error)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_json_constants_are_refused(constant: str) -> None:
    """NaN/Infinity (which Python's json accepts) are not JSON: refused, not echoed back."""
    error = refused('{"cmd": "ping", "id": 3, "t": ' + constant + "}")
    assert "not JSON" in str(error)


@pytest.mark.parametrize(
    "message",
    [
        "[" * 100_000 + "]" * 100_000,
        '{"cmd": "ping", "id": 1, "t": 1, "x": ' + "[" * 1500 + "]" * 1500 + "}",
        "x" * (MAX_REQUEST + 1),
        "\udcff",
        b"\x00" * 100,
    ],
)
def test_the_server_answers_every_bad_request_with_an_error_reply(message: str | bytes) -> None:
    """MediaServer.control turns each bad request into an ok:false reply (it never raises)."""
    reply = json.loads(MediaServer(None, None).control(message, "caller"))
    assert reply["ok"] is False and reply["id"] is None
    assert "internal error" not in reply["error"]
