"""The real SignalingServer driven by real websockets clients on loopback.

Every test starts a server on 127.0.0.1 with a free port and talks to it with
``websockets`` clients only; nothing is mocked. Every wait has a timeout.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import logging
import random

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.protocol import State

from rtc_signal.proto import Command, decode, encode_request, encode_response
from rtc_signal.signaling.router import BAD_REQUEST, CONFLICT, FORBIDDEN, NOT_FOUND, TOO_LARGE
from tests.conftest import (
    WAIT,
    answer_frame,
    candidate_frame,
    client,
    connect,
    eventually,
    expect_response,
    offer,
    offer_frame,
    recv_envelope,
    recv_frame,
    register,
    relay_offer,
    request_of,
    run,
    running_server,
    within,
)


async def assert_silent(ws: ClientConnection, timeout: float = 0.2) -> None:
    """Nothing arrives on ``ws`` for ``timeout`` seconds."""
    try:
        frame = await asyncio.wait_for(ws.recv(), timeout)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected frame: {frame!r}")


async def closed_code(ws: ClientConnection, timeout: float = WAIT) -> int | None:
    """Wait until ``ws`` is closed and return the close code the server sent."""
    await within(ws.wait_closed(), timeout)
    return ws.close_code


def b64(data: bytes, *, urlsafe: bool = False) -> str:
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    return encode(data).decode()


def raw_frame(command: object, payload: object) -> bytes:
    return json.dumps({"command": command, "payload": payload}).encode()


def request_json(**fields: object) -> bytes:
    return json.dumps(fields).encode()


# -- the basic flow ------------------------------------------------------------------


def test_full_flow_acks_and_forwards_verbatim() -> None:
    """Register, offer, answer and candidates both ways: acks code 0, frames relayed as sent."""

    async def main() -> None:
        async with (
            running_server() as server,
            client(server.url, "/register") as answerer,
            client(server.url, "/offer") as offerer,
        ):
            await register(answerer, "alice")
            assert server.router.answer_peers() == ["alice"]

            await relay_offer(offerer, answerer, "bob", "alice", "v=0\r\no=- offer\r\n")
            assert server.router.offer_peers() == ["bob"]

            await answerer.send(encode_response(Command.OFFER_RESPONSE, 0, "ok"))  # only logged
            sent = answer_frame("alice", "bob", "v=0\r\no=- answer\r\n")
            await answerer.send(sent)
            await expect_response(answerer, Command.ANSWER_RESPONSE, 0)
            assert await recv_frame(offerer) == sent

            for sender, receiver, source, target in (
                (answerer, offerer, "alice", "bob"),
                (offerer, answerer, "bob", "alice"),
            ):
                sent = candidate_frame(source, target)
                await sender.send(sent)
                await expect_response(sender, Command.CANDIDATE_RESPONSE, 0)
                assert await recv_frame(receiver) == sent
            await assert_silent(answerer)
            await assert_silent(offerer)

    run(main())


def test_full_flow_on_uvloop() -> None:
    """The server relays and acknowledges the same on uvloop (``serve --loop uvloop``)."""
    import uvloop

    async def main() -> str:
        async with (
            asyncio.timeout(WAIT * 4),
            running_server() as server,
            client(server.url, "/register") as answerer,
            client(server.url, "/offer") as offerer,
        ):
            await register(answerer, "alice")
            await relay_offer(offerer, answerer, "bob", "alice", "v=0\r\no=- offer\r\n")
            sent = answer_frame("alice", "bob", "v=0\r\no=- answer\r\n")
            await answerer.send(sent)
            await expect_response(answerer, Command.ANSWER_RESPONSE, 0)
            assert await recv_frame(offerer) == sent
            await offerer.send(offer_frame("bob", "nobody"))
            await expect_response(offerer, Command.OFFER_RESPONSE, NOT_FOUND)
            return type(asyncio.get_running_loop()).__module__

    assert uvloop.run(main()).startswith("uvloop")


def test_text_frames_get_text_replies_and_forward_as_text() -> None:
    """Text frames work like binary ones; replies are text; forwards keep the sender's type."""

    async def main() -> None:
        async with (
            running_server() as server,
            client(server.url, "/register") as answerer,
            client(server.url, "/offer") as offerer,
        ):
            await register(answerer, "alice", text=True)  # checks the 101 is a text frame
            sent = offer_frame("bob", "alice").decode()
            await offerer.send(sent)
            await expect_response(offerer, Command.OFFER_RESPONSE, 0, binary=False)
            got = await recv_frame(answerer)
            assert isinstance(got, str) and got == sent
            # binary answer from the text-registered peer: binary ack, binary forward
            sent_bin = answer_frame("alice", "bob")
            await answerer.send(sent_bin)
            await expect_response(answerer, Command.ANSWER_RESPONSE, 0, binary=True)
            got = await recv_frame(offerer)
            assert isinstance(got, bytes) and got == sent_bin
            # an error reply follows the frame type too
            await offerer.send(offer_frame("bob", "nobody").decode())
            response = await expect_response(offerer, Command.OFFER_RESPONSE, None, binary=False)
            assert response.code != 0
            await offerer.send("not json")
            await expect_response(offerer, Command.ERROR, BAD_REQUEST, binary=False)

    run(main())


def test_responses_from_peers_are_not_answered() -> None:
    """Responses (101-104) sent by peers are only logged: no reply, no forward."""

    async def main() -> None:
        async with (
            running_server() as server,
            client(server.url, "/register") as answerer,
            client(server.url, "/offer") as offerer,
        ):
            await register(answerer, "alice")
            await offer(offerer, "bob", "alice")
            await recv_frame(answerer)
            for command in (101, 102, 103, 104):
                await answerer.send(encode_response(Command(command), 0, "ok"))
                await offerer.send(encode_response(Command(command), 7, "meh"))
            await assert_silent(answerer)
            await assert_silent(offerer)
            await offer(offerer, "bob", "alice")  # still usable

    run(main())


# -- registration ---------------------------------------------------------------------


def test_duplicate_id_refused_with_409_and_first_registration_kept() -> None:
    """A taken ID gets 409; offers still reach the first peer, even after the second leaves."""

    async def main() -> None:
        async with (
            running_server() as server,
            client(server.url, "/register") as first,
            client(server.url, "/offer") as offerer,
        ):
            await register(first, "alice")
            async with client(server.url, "/register") as second:
                await second.send(encode_request(Command.INIT, "alice", ""))
                await expect_response(second, Command.INIT_RESPONSE, CONFLICT)
                assert server.router.answer_peers() == ["alice"]

                await relay_offer(offerer, first, "bob", "alice")
                await assert_silent(second)
                # the refused connection stays usable with another ID
                await register(second, "carol")
                assert server.router.answer_peers() == ["alice", "carol"]
            # the refused peer leaving must not take the first registration with it
            await eventually(lambda: server.router.answer_peers() == ["alice"])
            await relay_offer(offerer, first, "bob", "alice", "v=0\r\nagain\r\n")

    run(main())


def test_registration_disappears_when_connection_closes() -> None:
    """Closing the connection frees its ID: offers then get 404 and the ID can be re-registered."""

    async def main() -> None:
        async with running_server() as server, client(server.url, "/offer") as offerer:
            async with client(server.url, "/register") as first:
                await register(first, "alice")
            await eventually(lambda: server.router.answer_peers() == [])
            await offer(offerer, "bob", "alice", expect_code=NOT_FOUND)

            async with client(server.url, "/register") as again:
                await register(again, "alice")
                await relay_offer(offerer, again, "bob", "alice")

    run(main())


def test_registration_disappears_when_connection_drops_without_close() -> None:
    """A peer whose TCP connection is aborted (no close frame) is removed too."""

    async def main() -> None:
        async with running_server() as server, client(server.url, "/offer") as offerer:
            dropped = await connect(server.url, "/register")
            await register(dropped, "alice")
            dropped.transport.abort()
            await eventually(lambda: server.router.answer_peers() == [])
            await offer(offerer, "bob", "alice", expect_code=NOT_FOUND)

    run(main())


def test_offer_peer_id_released_when_it_leaves() -> None:
    """An offer peer's ID is bound while connected: taken (409), then freed on close (404)."""

    async def main() -> None:
        async with running_server() as server, client(server.url, "/register") as answerer:
            await register(answerer, "alice")
            async with client(server.url, "/offer") as first:
                await offer(first, "bob", "alice")
                await recv_frame(answerer)
                async with client(server.url, "/offer") as impostor:
                    await offer(impostor, "bob", "alice", expect_code=CONFLICT)
                    await assert_silent(answerer)
            await eventually(lambda: server.router.offer_peers() == [])
            await answerer.send(answer_frame("alice", "bob"))
            response = await expect_response(answerer, Command.ANSWER_RESPONSE, None)
            assert response.code != 0
            await register(answerer, "alice")  # re-registering the same ID is idempotent

    run(main())


# -- forwarding failures ------------------------------------------------------------


def test_unknown_target_is_refused_and_sender_continues() -> None:
    """An offer to an unknown ID gets a non-zero 103; the same session can then call someone."""

    async def main() -> None:
        async with (
            running_server() as server,
            client(server.url, "/register") as answerer,
            client(server.url, "/offer") as offerer,
        ):
            await register(answerer, "alice")
            for target in ("nobody", "", "ALICE"):
                response = await offer(offerer, "bob", target, expect_code=None)
                assert response.code != 0 and response.code == NOT_FOUND
            assert server.router.offer_peers() == []
            await relay_offer(offerer, answerer, "bob", "alice")
            # the answer side: an answer to an unknown offer peer, then a good one
            await answerer.send(answer_frame("alice", "nobody"))
            response = await expect_response(answerer, Command.ANSWER_RESPONSE, None)
            assert response.code != 0
            sent = answer_frame("alice", "bob")
            await answerer.send(sent)
            await expect_response(answerer, Command.ANSWER_RESPONSE, 0)
            assert await recv_frame(offerer) == sent

    run(main())


def test_target_that_closed_is_refused_and_sender_continues() -> None:
    """An offer to a peer that has just closed gets a non-zero 103; the sender goes on."""

    async def main() -> None:
        async with (
            running_server() as server,
            client(server.url, "/register") as other,
            client(server.url, "/offer") as offerer,
        ):
            await register(other, "carol")
            gone = await connect(server.url, "/register")
            await register(gone, "alice")
            await gone.close()
            response = await offer(offerer, "bob", "alice", expect_code=None)
            assert response.code != 0
            await offer(offerer, "bob", "carol")
            await recv_frame(other)

    run(main())


def test_forward_to_connection_closed_but_still_registered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A target whose socket is dead but still registered: sender gets non-zero, server is fine.

    The target's own handler is kept busy (it is forwarding to a peer that does
    not read), so the server has not yet unregistered it when the offer comes.
    """
    caplog.set_level(logging.ERROR)

    async def main() -> None:
        async with (
            running_server() as server,
            client(server.url, "/register") as helper,
            client(server.url, "/offer") as caller,
        ):
            await register(helper, "carol")
            stuck = await connect(server.url, "/register")  # the answer peer "alice"
            slow = await connect(server.url, "/offer")  # an offer peer that stops reading
            await register(stuck, "alice")
            await offer(slow, "slow", "alice")
            await recv_frame(stuck)
            slow.transport.pause_reading()

            # alice sends answers to "slow" until the server blocks forwarding them:
            # then alice's handler is stuck and no ack comes back.
            big = answer_frame("alice", "slow", "x" * 30_000)  # ~54 KB after two base64s
            sent = 0
            while True:
                assert sent < 2000, "the server never blocked on the non-reading peer"
                await stuck.send(big)
                sent += 1
                try:
                    await expect_response(stuck, Command.ANSWER_RESPONSE, 0, timeout=0.5)
                except TimeoutError:
                    break
            assert sent > 1

            # alice queues a few more frames, then her connection dies without a
            # close handshake (the frames reach the server before the EOF)
            for _ in range(3):
                await stuck.send(big)
            local = stuck.local_address
            stuck.transport.close()
            assert server._server is not None
            conns = [c for c in server._server.connections if c.remote_address == local]
            assert len(conns) == 1
            await eventually(lambda: conns[0].state is State.CLOSED)
            assert "alice" in server.router.answer_peers(), "precondition: still registered"

            response = await offer(caller, "bob", "alice", expect_code=None)
            assert response.code != 0
            await eventually(lambda: "alice" not in server.router.answer_peers())
            # the caller's session continues
            await offer(caller, "bob", "carol")
            await recv_frame(helper)

            # let the blocked handler finish: nothing must crash, alice's frames
            # queued after the one being forwarded are dropped with her connection
            slow.transport.resume_reading()
            for _ in range(sent):
                assert request_of(await recv_frame(slow, 10)).source == "alice"
            await assert_silent(slow)
            await eventually(lambda: conns[0] not in server._server.connections)
            assert len(server.router) == 3
            assert server.router.answer_peers() == ["carol"]
            await slow.close()
            await offer(caller, "bob", "carol")
            await recv_frame(helper)

    run(main())
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


# -- malformed input --------------------------------------------------------------------

REQ = request_json(source="bob", target="alice", body=None)
MALFORMED: list[tuple[str, bytes | str, Command]] = [
    ("not-json", b"hello", Command.ERROR),
    ("not-json-text", "hello", Command.ERROR),
    ("empty", b"", Command.ERROR),
    ("empty-text", "", Command.ERROR),
    ("json-array", b"[1,2]", Command.ERROR),
    ("json-null", b"null", Command.ERROR),
    ("json-string", b'"x"', Command.ERROR),
    ("truncated", b'{"command":3,"payload":"', Command.ERROR),
    ("invalid-utf8", b'{"command":3,"payload":"\xff\xfe"}', Command.ERROR),
    ("invalid-utf8-bare", b"\xc3\x28\xa0\xa1", Command.ERROR),
    ("utf16", '{"command":1,"payload":""}'.encode("utf-16"), Command.ERROR),
    ("nan", b'{"command":NaN,"payload":""}', Command.ERROR),
    ("deep-nesting", b"[" * 30_000 + b"]" * 30_000, Command.ERROR),
    ("missing-command", json.dumps({"payload": b64(REQ)}).encode(), Command.ERROR),
    ("missing-payload", b'{"command":3}', Command.OFFER_RESPONSE),
    ("unknown-command", raw_frame(9, b64(REQ)), Command.ERROR),
    ("unknown-command-negative", raw_frame(-1, b64(REQ)), Command.ERROR),
    ("unknown-command-huge", raw_frame(2**70, b64(REQ)), Command.ERROR),
    ("command-string", raw_frame("3", b64(REQ)), Command.ERROR),
    ("command-float", raw_frame(3.0, b64(REQ)), Command.ERROR),
    ("command-bool", raw_frame(True, b64(REQ)), Command.ERROR),
    ("command-null", raw_frame(None, b64(REQ)), Command.ERROR),
    ("payload-number", raw_frame(3, 12), Command.OFFER_RESPONSE),
    ("payload-null", raw_frame(3, None), Command.OFFER_RESPONSE),
    ("payload-object", raw_frame(3, {"source": "bob"}), Command.OFFER_RESPONSE),
    ("payload-bad-base64", raw_frame(3, "!!!not base64!!!"), Command.OFFER_RESPONSE),
    ("payload-unpadded", raw_frame(3, b64(REQ).rstrip("=") + "x"), Command.OFFER_RESPONSE),
    (
        "payload-urlsafe",
        raw_frame(3, b64(b'{"source":"~~~","target":"alice"}', urlsafe=True)),
        Command.OFFER_RESPONSE,
    ),
    ("payload-newline", raw_frame(3, b64(REQ)[:8] + "\n" + b64(REQ)[8:]), Command.OFFER_RESPONSE),
    ("payload-not-json", raw_frame(3, b64(b"not json")), Command.OFFER_RESPONSE),
    ("payload-array", raw_frame(3, b64(b"[]")), Command.OFFER_RESPONSE),
    ("payload-invalid-utf8", raw_frame(3, b64(b'{"source":"\xff"}')), Command.OFFER_RESPONSE),
    (
        "source-number",
        raw_frame(3, b64(request_json(source=1, target="alice"))),
        Command.OFFER_RESPONSE,
    ),
    (
        "target-list",
        raw_frame(3, b64(request_json(source="bob", target=["alice"]))),
        Command.OFFER_RESPONSE,
    ),
    (
        "source-lone-surrogate",
        raw_frame(3, b64(b'{"source":"\\ud800","target":"alice"}')),
        Command.OFFER_RESPONSE,
    ),
    (
        "body-bad-base64",
        raw_frame(3, b64(request_json(source="bob", target="alice", body="%%%"))),
        Command.OFFER_RESPONSE,
    ),
    (
        "body-number",
        raw_frame(3, b64(request_json(source="bob", target="alice", body=5))),
        Command.OFFER_RESPONSE,
    ),
    (
        "response-code-string",
        raw_frame(103, b64(b'{"code":"0","msg":"ok"}')),
        Command.ERROR,
    ),
    ("response-not-json", raw_frame(101, b64(b"{")), Command.ERROR),
]


@pytest.mark.parametrize(
    ("frame", "reply"),
    [pytest.param(frame, reply, id=name) for name, frame, reply in MALFORMED],
)
def test_malformed_frame_gets_400_and_connection_stays_usable(
    frame: bytes | str, reply: Command
) -> None:
    """A malformed frame is answered with 400 (in the readable command) and nothing closes."""

    async def main() -> None:
        async with (
            running_server() as server,
            client(server.url, "/register") as answerer,
            client(server.url, "/offer") as offerer,
        ):
            for ws in (offerer, answerer):
                await ws.send(frame)
                await expect_response(ws, reply, BAD_REQUEST, binary=isinstance(frame, bytes))
            # both connections still work, and nothing got registered
            assert server.router.answer_peers() == []
            await register(answerer, "alice")
            await relay_offer(offerer, answerer, "bob", "alice")

    run(main())


def test_invalid_utf8_in_a_text_frame_closes_with_1007_only_that_connection() -> None:
    """A text frame that is not UTF-8 is a WebSocket protocol error (1007); others go on."""

    async def main() -> None:
        async with (
            running_server() as server,
            client(server.url, "/register") as alice,
            client(server.url, "/offer") as caller,
        ):
            await register(alice, "alice")
            bad = await connect(server.url, "/register")
            await register(bad, "mallory")
            # websockets sends bytes as a text frame as-is when asked to
            await bad.send(b'{"command":1,"payload":"\xff"}', text=True)
            assert await closed_code(bad) == 1007
            await eventually(lambda: server.router.answer_peers() == ["alice"])
            await offer(caller, "bob", "alice")
            await recv_frame(alice)

    run(main())


def test_many_malformed_frames_in_a_row_keep_the_connection() -> None:
    """Hundreds of bad frames (fuzzed golden-like frames) each get one reply; the session lives."""
    rng = random.Random(1234)
    good = offer_frame("bob", "alice", "v=0\r\n" + "a=x\r\n" * 20)
    frames: list[bytes] = []
    for _ in range(300):
        mutated = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        frames.append(bytes(mutated))

    async def main() -> None:
        async with (
            running_server() as server,
            client(server.url, "/register") as answerer,
            client(server.url, "/offer") as offerer,
        ):
            await register(answerer, "alice")
            for frame in frames:
                await offerer.send(frame)
                envelope = await recv_envelope(offerer)
                assert not envelope.command.is_request
                # a mutated frame may still be valid (then routed or refused by a rule)
                if envelope.response.code == 0:
                    forwarded = await recv_frame(answerer)
                    assert forwarded == frame
            await relay_offer(offerer, answerer, "bob", "alice")

    run(main())


# -- routing rules ------------------------------------------------------------------

RULES: list[tuple[str, str, bytes, Command, int]] = [
    ("init-on-offer", "/offer", encode_request(Command.INIT, "x", ""), Command.INIT_RESPONSE, 403),
    (
        "init-empty-id",
        "/register",
        encode_request(Command.INIT, "", ""),
        Command.INIT_RESPONSE,
        400,
    ),
    ("offer-on-register", "/register", offer_frame("a", "alice"), Command.OFFER_RESPONSE, 403),
    ("answer-on-offer", "/offer", answer_frame("bob", "alice"), Command.ANSWER_RESPONSE, 403),
    (
        "answer-before-register",
        "/register",
        answer_frame("x", "bob"),
        Command.ANSWER_RESPONSE,
        403,
    ),
    (
        "candidate-before-register",
        "/register",
        candidate_frame("x", "bob"),
        Command.CANDIDATE_RESPONSE,
        403,
    ),
    ("offer-empty-source", "/offer", offer_frame("", "alice"), Command.OFFER_RESPONSE, 400),
]


@pytest.mark.parametrize(
    ("path", "frame", "reply", "code"),
    [pytest.param(p, f, r, c, id=name) for name, p, f, r, c in RULES],
)
def test_rule_violations_are_refused_in_the_matching_response(
    path: str, frame: bytes, reply: Command, code: int
) -> None:
    """Requests on the wrong path or with bad IDs get the documented code; nothing forwarded."""

    async def main() -> None:
        async with (
            running_server() as server,
            client(server.url, "/register") as alice,
            client(server.url, path) as ws,
        ):
            await register(alice, "alice")
            await ws.send(frame)
            await expect_response(ws, reply, code)
            await assert_silent(alice)
            assert server.router.answer_peers() == ["alice"]

    run(main())


def test_spoofed_source_is_refused() -> None:
    """A peer may only send as its own ID (403); its bound/registered ID is unchanged."""

    async def main() -> None:
        async with (
            running_server() as server,
            client(server.url, "/register") as alice,
            client(server.url, "/register") as carol,
            client(server.url, "/offer") as bob,
        ):
            await register(alice, "alice")
            await register(carol, "carol")
            await offer(bob, "bob", "alice")
            await recv_frame(alice)
            # bob pretends to be someone else; alice pretends to be carol
            await bob.send(offer_frame("mallory", "alice"))
            await expect_response(bob, Command.OFFER_RESPONSE, FORBIDDEN)
            await alice.send(answer_frame("carol", "bob"))
            await expect_response(alice, Command.ANSWER_RESPONSE, FORBIDDEN)
            await alice.send(encode_request(Command.INIT, "carol", ""))
            await expect_response(alice, Command.INIT_RESPONSE, CONFLICT)
            await assert_silent(bob)
            await assert_silent(alice)
            await assert_silent(carol)
            assert server.router.answer_peers() == ["alice", "carol"]
            assert server.router.offer_peers() == ["bob"]

    run(main())


# -- size limits ------------------------------------------------------------------------

MAX = 1024


def padded(frame: bytes, size: int) -> bytes:
    """``frame`` (a JSON object) padded with whitespace before its ``}`` to ``size`` bytes."""
    assert frame.endswith(b"}") and len(frame) <= size
    return frame[:-1] + b" " * (size - len(frame)) + b"}"


def test_frame_at_the_limit_is_accepted_one_byte_more_gets_413() -> None:
    """max_frame bytes are fine; max_frame + 1 gets 413 in the frame's command; conn lives."""

    async def main() -> None:
        async with (
            running_server(max_frame=MAX) as server,
            client(server.url, "/register") as ws,
        ):
            await ws.send(padded(encode_request(Command.INIT, "alice", ""), MAX + 1))
            await expect_response(ws, Command.INIT_RESPONSE, TOO_LARGE)
            assert server.router.answer_peers() == []
            await ws.send(padded(encode_request(Command.INIT, "alice", ""), MAX))
            await expect_response(ws, Command.INIT_RESPONSE, 0)
            assert server.router.answer_peers() == ["alice"]

    run(main())


@pytest.mark.parametrize("text", [False, True], ids=["binary", "text"])
def test_oversized_frame_gets_413_and_connection_stays_usable(text: bool) -> None:
    """A frame between the limit and 4x the limit gets 413; the session continues."""

    async def main() -> None:
        async with (
            running_server(max_frame=MAX) as server,
            client(server.url, "/register") as answerer,
            client(server.url, "/offer") as offerer,
        ):
            await register(answerer, "alice")
            for size in (MAX + 1, 2 * MAX, 4 * MAX):
                frame = padded(offer_frame("bob", "alice"), size)
                sent: bytes | str = frame.decode() if text else frame
                await offerer.send(sent)
                await expect_response(offerer, Command.OFFER_RESPONSE, TOO_LARGE, binary=not text)
                await offerer.send(b"x" * (MAX + 10))  # unreadable command: ERROR
                await expect_response(offerer, Command.ERROR, TOO_LARGE)
            await assert_silent(answerer)
            await relay_offer(offerer, answerer, "bob", "alice")

    run(main())


def test_text_frame_limit_counts_bytes_not_characters() -> None:
    """A text frame of few characters but more than max_frame UTF-8 bytes gets 413."""

    async def main() -> None:
        async with (
            running_server(max_frame=MAX) as server,
            client(server.url, "/register") as answerer,
            client(server.url, "/offer") as offerer,
        ):
            await register(answerer, "alice")
            frame = offer_frame("bob", "alice").decode()
            # unknown fields are ignored: pad with 3-byte characters
            frame = frame[:-1] + ',"pad":"' + "\u20ac" * 600 + '"}'
            assert len(frame) <= MAX < len(frame.encode())
            await offerer.send(frame)
            await expect_response(offerer, Command.OFFER_RESPONSE, TOO_LARGE, binary=False)
            await assert_silent(answerer)

    run(main())


@pytest.mark.parametrize("text", [False, True], ids=["binary", "text"])
def test_frame_beyond_four_times_the_limit_closes_with_1009(text: bool) -> None:
    """A frame over 4x max_frame closes the connection with 1009; others are unaffected."""

    async def main() -> None:
        async with (
            running_server(max_frame=MAX) as server,
            client(server.url, "/register") as other,
            client(server.url, "/offer") as caller,
        ):
            await register(other, "carol")
            ws = await connect(server.url, "/register")
            await register(ws, "alice")
            frame = b"x" * (4 * MAX + 1)
            await ws.send(frame.decode() if text else frame)
            assert await closed_code(ws) == 1009
            await eventually(lambda: server.router.answer_peers() == ["carol"])
            await offer(caller, "bob", "carol")
            await recv_frame(other)

    run(main())


# -- HTTP ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/", "/foo", "/register/", "/registerx", "/REGISTER", "/offer/x", "//offer"]
)
def test_unknown_path_is_refused_with_http_404(path: str) -> None:
    """Only /register and /offer open a WebSocket; any other path gets HTTP 404."""

    async def main() -> None:
        async with running_server() as server:
            with pytest.raises(InvalidStatus) as info:
                await connect(server.url, path)
            assert info.value.response.status_code == 404
            assert len(server.router) == 0

    run(main())


def test_query_string_does_not_change_the_path() -> None:
    """``/register?x=1`` is the /register endpoint (the query is ignored)."""

    async def main() -> None:
        async with running_server() as server, client(server.url, "/register?v=1") as ws:
            await register(ws, "alice")
            async with client(server.url, "/offer?v=1") as offerer:
                await offer(offerer, "bob", "alice")

    run(main())


# -- keepalive -------------------------------------------------------------------------------


def test_keepalive_drops_a_peer_that_stops_answering_pings() -> None:
    """A peer that stops answering pings is dropped and its ID leaves; healthy peers stay."""

    async def main() -> None:
        async with (
            running_server(ping_interval=0.2, ping_timeout=0.2, close_timeout=0.5) as server,
            client(server.url, "/register") as healthy,
        ):
            zombie = await connect(server.url, "/register")
            try:
                await register(zombie, "zombie")
                await register(healthy, "healthy")
                zombie.transport.pause_reading()  # it can no longer see pings
                # ping interval + pong timeout + closing timeout, with a margin
                await eventually(lambda: "zombie" not in server.router.answer_peers(), timeout=4)
                # the healthy peer has answered pings all along and is still there
                await asyncio.sleep(0.6)
                assert server.router.answer_peers() == ["healthy"]
                async with client(server.url, "/offer") as caller:
                    await offer(caller, "bob", "healthy")
                    await recv_frame(healthy)
                    await offer(caller, "bob", "zombie", expect_code=NOT_FOUND)
            finally:
                zombie.transport.abort()

    run(main())


def test_no_keepalive_when_disabled() -> None:
    """With pings disabled, a peer that reads nothing for a while stays registered."""

    async def main() -> None:
        async with running_server(ping_interval=None, ping_timeout=None) as server:
            quiet = await connect(server.url, "/register")
            try:
                await register(quiet, "quiet")
                quiet.transport.pause_reading()
                await asyncio.sleep(0.6)
                assert server.router.answer_peers() == ["quiet"]
            finally:
                quiet.transport.abort()

    run(main())


# -- concurrency -----------------------------------------------------------------------------


def test_concurrent_forwards_to_one_peer_never_interleave() -> None:
    """20 callers x 50 offers to one peer: it gets exactly the 1000 frames, each intact."""
    callers, per_caller = 20, 50
    rng = random.Random(42)
    frames = {
        i: [
            offer_frame(f"caller-{i}", "sink", f"v=0\r\n{i}-{j}-" + "y" * rng.randint(0, 8000))
            for j in range(per_caller)
        ]
        for i in range(callers)
    }

    async def main() -> None:
        async with running_server() as server, client(server.url, "/register") as sink:
            await register(sink, "sink")

            async def caller(i: int) -> None:
                async with client(server.url, "/offer") as ws:
                    await asyncio.gather(*(ws.send(frame) for frame in frames[i]))
                    for _ in range(per_caller):
                        await expect_response(ws, Command.OFFER_RESPONSE, 0, timeout=20)

            async def receive_all() -> list[bytes | str]:
                return [await recv_frame(sink, 20) for _ in range(callers * per_caller)]

            received, *_ = await asyncio.gather(receive_all(), *(caller(i) for i in range(callers)))
            await assert_silent(sink)
            sent = collections.Counter(f for fs in frames.values() for f in fs)
            assert all(isinstance(f, bytes) for f in received)
            for frame in received:
                decode(frame)  # every forwarded frame is a whole, valid frame
            assert collections.Counter(received) == sent
            # per caller, frames arrive in the order that caller sent them
            order: dict[str, list[bytes | str]] = collections.defaultdict(list)
            for frame in received:
                order[decode(frame).request.source].append(frame)
            for i in range(callers):
                assert order[f"caller-{i}"] == frames[i]

    run(main(), timeout=60)


# -- isolation ----------------------------------------------------------------------------------


def test_bad_inputs_never_lose_another_peers_registration() -> None:
    """Whatever one peer sends (or how it dies), another peer's registration survives."""

    async def main() -> None:
        async with (
            running_server(max_frame=MAX) as server,
            client(server.url, "/register") as alice,
            client(server.url, "/offer") as caller,
        ):
            await register(alice, "alice")
            await offer(caller, "bob", "alice")
            await recv_frame(alice)
            attacks: list[tuple[str, list[bytes | str]]] = [
                ("/register", [encode_request(Command.INIT, "alice", "")]),
                (
                    "/register",
                    [
                        encode_request(Command.INIT, "eve", ""),
                        encode_request(Command.INIT, "alice", ""),
                        answer_frame("alice", "bob"),
                        candidate_frame("alice", "bob"),
                    ],
                ),
                ("/offer", [offer_frame("bob", "alice"), answer_frame("bob", "alice")]),
                ("/offer", [encode_request(Command.INIT, "alice", "")]),
                ("/register", [f for _, f, _ in MALFORMED if len(f) <= MAX]),
                ("/offer", [f for _, f, _ in MALFORMED if len(f) <= MAX]),
                ("/register", [b"x" * (MAX + 1), b"x" * (4 * MAX + 1)]),  # 413 then 1009
                ("/offer", [b"y" * (4 * MAX + 1)]),
            ]
            for path, bad_frames in attacks:
                ws = await connect(server.url, path)
                for frame in bad_frames:
                    try:
                        await ws.send(frame)
                        await recv_envelope(ws, binary=None)
                    except ConnectionClosed:
                        break
                ws.transport.abort()  # die abruptly
                assert "alice" in server.router.answer_peers()
            await eventually(lambda: len(server.router) == 2)
            await assert_silent(alice)
            assert server.router.answer_peers() == ["alice"]
            assert server.router.offer_peers() == ["bob"]
            await relay_offer(caller, alice, "bob", "alice", "v=0\r\nstill here\r\n")
            # and alice can still answer bob
            sent = answer_frame("alice", "bob")
            await alice.send(sent)
            await expect_response(alice, Command.ANSWER_RESPONSE, 0)
            assert await recv_frame(caller) == sent

    run(main())


# -- shutdown -------------------------------------------------------------------------------------


def test_server_close_sends_1001_to_every_client() -> None:
    """Closing the server closes every connection with 1001 (going away)."""

    async def main() -> None:
        async with running_server() as server:
            a = await connect(server.url, "/register")
            b = await connect(server.url, "/offer")
            c = await connect(server.url, "/register")
            await register(a, "alice")
            await offer(b, "bob", "alice")
            await recv_frame(a)
            await within(server.close(), 5)
            codes = await asyncio.gather(*(closed_code(ws) for ws in (a, b, c)))
            assert codes == [1001, 1001, 1001]
        assert server.router.answer_peers() == []

    run(main())
