"""End-to-end: `rtc-signal serve` and both `rtc-peer` commands as real processes
on 127.0.0.1, exchanging data-channel messages."""

from __future__ import annotations

import signal

from tests.integration.procs import (
    FAST,
    LOOPBACK,
    run_peer,
    server,
    start_peer,
    stop,
    wait,
    wait_registered,
)


def test_offer_and_answer_exchange_five_messages_and_exit_zero() -> None:
    """Both peers send and receive 5 timer messages, in order, then exit 0."""
    with server() as url:
        answer = start_peer("answer", "--id", "a1", "--signal", url, *LOOPBACK, *FAST)
        wait_registered(answer)
        offer = run_peer("offer", "--target", "a1", "--signal", url, *LOOPBACK, *FAST)
        answered = wait(answer)
    assert offer.returncode == 0, offer.stderr
    assert answered.returncode == 0, answered.stderr
    assert offer.lines("recv ") == [f"recv answer-{n}" for n in range(1, 6)]
    assert offer.lines("sent ") == [f"sent offer-{n}" for n in range(1, 6)]
    assert answered.lines("recv ") == [f"recv offer-{n}" for n in range(1, 6)]
    assert answered.lines("sent ") == [f"sent answer-{n}" for n in range(1, 6)]


def test_signal_url_is_taken_from_the_environment() -> None:
    """RTC_SIGNAL_URL replaces the default --signal URL."""
    with server() as url:
        env = {"RTC_SIGNAL_URL": url}
        answer = start_peer("answer", "--id", "env", *LOOPBACK, *FAST, env=env)
        wait_registered(answer)
        offer = run_peer("offer", "--target", "env", *LOOPBACK, *FAST, env=env)
        answered = wait(answer)
    assert (offer.returncode, answered.returncode) == (0, 0), offer.stderr + answered.stderr
    assert len(offer.lines("recv ")) == 5


def test_answer_peer_serves_two_callers_in_turn() -> None:
    """An answer peer without --count serves successive callers, each on a fresh
    peer connection, and keeps running until interrupted."""
    with server() as url:
        answer = start_peer(
            "answer", "--id", "hub", "--signal", url, *LOOPBACK, "--interval", "0.2"
        )
        wait_registered(answer)
        first = run_peer(
            "offer",
            "--target",
            "hub",
            "--id",
            "caller-1",
            "--signal",
            url,
            *LOOPBACK,
            "--interval",
            "0.2",
            "--count",
            "3",
        )
        second = run_peer(
            "offer",
            "--target",
            "hub",
            "--id",
            "caller-2",
            "--signal",
            url,
            *LOOPBACK,
            "--interval",
            "0.2",
            "--count",
            "3",
        )
        assert answer.poll() is None, "the answer peer must keep serving"
        answered = stop(answer, signal.SIGINT)
    for caller in (first, second):
        assert caller.returncode == 0, caller.stderr
        assert caller.lines("recv ")[:3] == ["recv answer-1", "recv answer-2", "recv answer-3"]
    # Each call restarts the answer's counter: it is a new peer connection.
    assert answered.lines("recv offer-1") == ["recv offer-1", "recv offer-1"]
    assert answered.returncode == 130


def test_unreachable_server_is_one_clear_error_line() -> None:
    """With no server listening, the offer peer exits 1 with one clear line."""
    result = run_peer(
        "offer",
        "--target",
        "x",
        "--signal",
        "ws://127.0.0.1:9",
        *LOOPBACK,
        "--connect-timeout",
        "5",
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("rtc-peer: error: cannot reach signaling server"), result.stderr
    assert "Traceback" not in result.stderr


def test_taken_id_is_one_clear_error_line() -> None:
    """A second answer peer with a taken ID exits 1; the first keeps its ID."""
    with server() as url:
        first = start_peer("answer", "--id", "dup", "--signal", url, *LOOPBACK, *FAST)
        wait_registered(first)
        second = run_peer("answer", "--id", "dup", "--signal", url, *LOOPBACK)
        assert second.returncode == 1
        assert "already registered" in second.stderr.strip().splitlines()[-1]
        offer = run_peer("offer", "--target", "dup", "--signal", url, *LOOPBACK, *FAST)
        first_done = wait(first)
    assert offer.returncode == 0 and first_done.returncode == 0, offer.stderr


def test_unknown_target_is_one_clear_error_line() -> None:
    """Calling an ID nobody registered exits 1 naming the target."""
    with server() as url:
        result = run_peer("offer", "--target", "nobody", "--signal", url, *LOOPBACK)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("rtc-peer: error:") and "'nobody'" in last and "404" in last


def test_connect_timeout_is_one_clear_error_line() -> None:
    """If the data channel never opens, the offer peer gives up after
    --connect-timeout and says so."""
    import asyncio
    import threading

    from websockets.asyncio.client import connect

    from rtc_signal import proto

    with server() as url:
        stop_silent = threading.Event()
        registered = threading.Event()

        async def silent_answer_peer() -> None:
            # Registers, then never answers any offer.
            async with connect(url + "/register") as ws:
                await ws.send(proto.encode_request(proto.Command.INIT, "silent", ""))
                await asyncio.wait_for(ws.recv(), 5)
                registered.set()
                await asyncio.to_thread(stop_silent.wait, 30)

        thread = threading.Thread(target=asyncio.run, args=(silent_answer_peer(),))
        thread.start()
        try:
            assert registered.wait(10), "the silent peer did not register"
            result = run_peer(
                "offer",
                "--target",
                "silent",
                "--signal",
                url,
                *LOOPBACK,
                "--connect-timeout",
                "1.5",
            )
        finally:
            stop_silent.set()
            thread.join(10)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert "did not open within 1.5 s" in last, result.stderr


def test_bad_ice_server_url_is_a_usage_error() -> None:
    """A malformed --ice-server is refused before anything connects."""
    result = run_peer("offer", "--target", "x", "--ice-server", "http://example.invalid")
    assert result.returncode == 2
    assert "not an ICE server URL" in result.stderr


def test_answer_peer_survives_a_callers_garbage_offer() -> None:
    """A caller's unusable SDP fails only that call: the answer peer then serves
    the next caller."""
    import asyncio

    from websockets.asyncio.client import ClientConnection, connect

    from rtc_signal import proto

    async def next_response(ws: ClientConnection) -> proto.Response:
        while True:  # skip what the answer peer sends back (it may answer garbage)
            envelope = proto.decode(await asyncio.wait_for(ws.recv(), 5))
            if not envelope.command.is_request:
                return envelope.response

    async def bad_caller(url: str) -> int:
        async with connect(url + "/offer") as ws:
            for sdp in ("v=0\r\nthis is not SDP\r\n", ""):
                body = proto.SessionDescription(type="offer", sdp=sdp).to_json()
                await ws.send(proto.encode_request(proto.Command.OFFER, "bad", "sturdy", body))
                assert (await next_response(ws)).ok
            await ws.send(proto.encode_request(proto.Command.OFFER, "bad", "sturdy", b"{]"))
            code = (await next_response(ws)).code
            await asyncio.sleep(0.5)  # let the answer peer chew on it
            return code

    with server() as url:
        answer = start_peer(
            "answer", "--id", "sturdy", "--signal", url, *LOOPBACK, "--interval", "0.2"
        )
        wait_registered(answer)
        assert asyncio.run(bad_caller(url)) == 0
        assert answer.poll() is None, "a bad offer must not end the answer peer"
        good = run_peer("offer", "--target", "sturdy", "--signal", url, *LOOPBACK, *FAST)
        answered = stop(answer, signal.SIGINT)
    assert good.returncode == 0, good.stderr + answered.stderr
    assert len(good.lines("recv ")) == 5
