"""Rooms on the real server: raw websockets clients on ``/room`` over loopback.

Join and presence, relaying inside a room to the member addressed only, leave
on close, room tokens at the real handshake, and a hostile member that cannot
disturb a canary pair's exchange.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import AsyncIterator, Sequence

from websockets.asyncio.client import ClientConnection

from rtc_signal.proto import Command, decode, encode_request, encode_response, tokens
from rtc_signal.proto.rooms import Presence, parse_presence
from rtc_signal.signaling.limits import RateLimit
from rtc_signal.signaling.router import FORBIDDEN, NOT_FOUND
from tests.conftest import (
    WAIT,
    ServerFactory,
    answer_frame,
    candidate_frame,
    client,
    connect,
    eventually,
    expect_response,
    offer_frame,
    recv_frame,
    run,
    running_server,
    server_command,
    subprocess_env,
)
from tests.test_server import assert_silent

SECRET = b"room-test-secret-0123456789"


async def recv_presence(
    ws: ClientConnection, *, binary: bool = True, timeout: float = WAIT
) -> tuple[str, str, Presence]:
    """The next frame, which must be a Presence: (source, target, body)."""
    frame = await recv_frame(ws, timeout)
    assert isinstance(frame, bytes if binary else str), frame
    envelope = decode(frame)
    assert envelope.command is Command.PRESENCE, envelope
    request = envelope.request
    return request.source, request.target, parse_presence(request.body)


async def join(
    ws: ClientConnection, member: str, room: str, *, text: bool = False, code: int = 0
) -> tuple[str, ...]:
    """Join; check the 105 and return the members list (empty if refused)."""
    frame = encode_request(Command.JOIN, member, room)
    await ws.send(frame.decode() if text else frame)
    await expect_response(ws, Command.JOIN_RESPONSE, code, binary=not text)
    if code:
        return ()
    source, target, presence = await recv_presence(ws, binary=not text)
    assert (source, target, presence.room, presence.event) == ("", member, room, "members")
    return presence.members


@contextlib.asynccontextmanager
async def members(
    url: str | Sequence[str], *names: str, room: str = "r1"
) -> AsyncIterator[list[ClientConnection]]:
    """Clients joined to ``room`` in order, each having seen the later ones join;
    ``url``: the server, or one per member (members on several cluster nodes)."""
    urls = [url] * len(names) if isinstance(url, str) else list(url)
    assert len(urls) == len(names)
    async with contextlib.AsyncExitStack() as stack:
        joined: list[ClientConnection] = []
        for name, member_url in zip(names, urls, strict=True):
            ws = await stack.enter_async_context(client(member_url, "/room"))
            assert await join(ws, name, room) == tuple(names[: len(joined)])
            for earlier in joined:
                assert await recv_presence(earlier) == (
                    name,
                    names[joined.index(earlier)],
                    Presence(room, "join", member=name),
                )
            joined.append(ws)
        yield joined


def test_three_members_see_presence_and_relay_reaches_only_the_target() -> None:
    """a, b, c join; b offers to a (b joined later), a answers, both send a
    candidate: each frame reaches its target verbatim, c receives nothing."""

    async def scenario() -> None:
        async with running_server() as server, members(server.url, "a", "b", "c") as (a, b, c):
            for sender, receiver, frame, reply in (
                (b, a, offer_frame("b", "a"), Command.OFFER_RESPONSE),
                (a, b, answer_frame("a", "b"), Command.ANSWER_RESPONSE),
                (b, a, candidate_frame("b", "a"), Command.CANDIDATE_RESPONSE),
                (a, b, candidate_frame("a", "b"), Command.CANDIDATE_RESPONSE),
            ):
                await sender.send(frame)
                await expect_response(sender, reply, 0)
                assert await recv_frame(receiver) == frame
            await assert_silent(c)
            assert server.router.rooms() == {"r1": ["a", "b", "c"]}

    run(scenario())


def test_a_closed_member_is_seen_leaving_and_the_empty_room_vanishes() -> None:
    async def scenario() -> None:
        async with running_server() as server, members(server.url, "a", "b") as (a, b):
            await b.close()
            assert await recv_presence(a) == ("b", "a", Presence("r1", "leave", member="b"))
            # b's ID is free again: a newcomer may take it
            async with client(server.url, "/room") as again:
                assert await join(again, "b", "r1") == ("a",)
            await a.close()
            await eventually(lambda: not server.router.rooms())

    run(scenario())


def test_a_member_that_stops_answering_pings_is_seen_leaving() -> None:
    """The keepalive drops a member that went silent (as if SIGKILLed behind a
    live TCP connection); the others get its Presence ``leave`` and its ID can
    join again."""

    async def scenario() -> None:
        async with (
            running_server(ping_interval=0.2, ping_timeout=0.2, close_timeout=0.5) as server,
            members(server.url, "a") as (a,),
        ):
            zombie = await connect(server.url, "/room")
            try:
                assert await join(zombie, "z", "r1") == ("a",)
                assert (await recv_presence(a))[2] == Presence("r1", "join", member="z")
                zombie.transport.pause_reading()  # it no longer sees pings
                assert await recv_presence(a) == ("z", "a", Presence("r1", "leave", member="z"))
            finally:
                zombie.transport.abort()
            async with client(server.url, "/room") as again:
                assert await join(again, "z", "r1") == ("a",)

    run(scenario())


def test_text_clients_get_text_presence() -> None:
    async def scenario() -> None:
        async with running_server() as server, client(server.url, "/room") as t:
            assert await join(t, "t", "r1", text=True) == ()
            async with client(server.url, "/room") as b:
                assert await join(b, "b", "r1") == ("t",)
                assert (await recv_presence(t, binary=False))[2] == Presence(
                    "r1", "join", member="b"
                )

    run(scenario())


def test_room_tokens_work_for_their_room_only() -> None:
    """With a secret: a room token joins its room as its ID (403 for another room
    or ID), a plain token cannot join, and a room token cannot register."""

    def token(peer_id: str, room: str | None) -> dict[str, object]:
        minted = tokens.mint(SECRET, peer_id, int(time.time()) + 60, room)
        return {"additional_headers": {"Authorization": f"Bearer {minted}"}}

    async def scenario() -> None:
        async with running_server(secret=SECRET) as server:
            url = server.url
            async with client(url, "/room", **token("a", "r1")) as ws:
                await join(ws, "a", "r2", code=FORBIDDEN)
                await join(ws, "b", "r1", code=FORBIDDEN)
                assert await join(ws, "a", "r1") == ()
            async with client(url, "/room", **token("a", None)) as ws:
                await join(ws, "a", "r1", code=FORBIDDEN)
            async with client(url, "/register", **token("a", "r1")) as ws:
                await ws.send(encode_request(Command.INIT, "a", ""))
                await expect_response(ws, Command.INIT_RESPONSE, FORBIDDEN)
            assert server.router.answer_peers() == []

    run(scenario())


def test_hostile_member_with_forged_source_and_targets_cannot_touch_a_canary_pair() -> None:
    """m (first in r1) loops forged frames (others' source, answers and
    candidates outside any call, targets in another room, unknown targets)
    while the canary pair a, b of r1 completes offer/answer/candidates 20
    times: the canaries get exactly their own frames, m only refusals, x in
    r2 nothing."""

    async def scenario() -> None:
        async with (
            running_server() as server,
            members(server.url, "m", "a", "b") as (m, a, b),
            members(server.url, "x", room="r2") as (x,),
        ):
            hostile = [
                (offer_frame("a", "b"), FORBIDDEN),  # a's source
                (answer_frame("m", "b"), FORBIDDEN),  # b made no offer to m
                (candidate_frame("m", "a"), FORBIDDEN),  # no call, m joined first
                (offer_frame("m", "x"), FORBIDDEN),  # x is in r2
                (candidate_frame("b", "a"), FORBIDDEN),  # b's source
                (offer_frame("m", "nobody"), NOT_FOUND),
            ]
            stop = asyncio.Event()
            refusals = 0

            async def attack() -> None:
                nonlocal refusals
                while not stop.is_set():
                    for frame, code in hostile:
                        await m.send(frame)
                        envelope = decode(await recv_frame(m))
                        assert not envelope.command.is_request, envelope
                        assert envelope.response.code == code, (frame, envelope)
                        refusals += 1

            async def canary() -> None:
                for _ in range(20):
                    for sender, receiver, frame in (
                        (b, a, offer_frame("b", "a")),
                        (a, b, answer_frame("a", "b")),
                        (a, b, candidate_frame("a", "b")),
                        (b, a, candidate_frame("b", "a")),
                    ):
                        await sender.send(frame)
                        ack = decode(await recv_frame(sender))
                        assert ack.response.code == 0
                        assert await recv_frame(receiver) == frame
                stop.set()

            async with asyncio.TaskGroup() as group:
                group.create_task(attack())
                group.create_task(canary())
            assert refusals >= len(hostile)
            for ws in (a, b, x):
                await assert_silent(ws)

    run(scenario())


def test_presence_is_not_charged_to_the_receiver() -> None:
    """With a burst of 3, a member told of 6 joins acks each Presence (106) and
    can still send its own offer: presence earns credits like forwards do."""

    async def scenario() -> None:
        limit = RateLimit(rate=0.01, burst=3, grace=60)
        async with running_server(rate_limit=limit) as server:
            names = ("a", "b", "c", "d", "e", "f", "g")
            async with members(server.url, *names) as (a, *others):
                ack = encode_response(Command.PRESENCE_RESPONSE, 0, "ok")
                for _ in others:
                    await a.send(ack)
                await a.send(offer_frame("a", "b"))
                await expect_response(a, Command.OFFER_RESPONSE, 0)
                assert await recv_frame(others[0]) == offer_frame("a", "b")

    run(scenario())


def test_cli_max_room_size_and_room_tokens(server_process_factory: ServerFactory) -> None:
    """`rtc-signal serve --secret S --max-room-size 2`: two members with
    `rtc-signal token --id X --room r1` tokens join, a third gets 503."""
    secret = "cli-room-secret-0123456789"
    _, url = server_process_factory("--secret", secret, "--max-room-size", "2")

    def mint(member: str) -> dict[str, object]:
        result = subprocess.run(
            server_command("token", "--id", member, "--room", "r1", "--secret", secret),
            capture_output=True,
            text=True,
            timeout=20,
            env=subprocess_env(),
            stdin=subprocess.DEVNULL,
        )
        assert result.returncode == 0, result.stderr
        grant = tokens.verify(secret.encode(), result.stdout.strip(), time.time())
        assert grant == (member, "r1")
        return {"additional_headers": {"Authorization": f"Bearer {result.stdout.strip()}"}}

    async def scenario() -> None:
        async with (
            client(url, "/room", **mint("a")) as a,
            client(url, "/room", **mint("b")) as b,
            client(url, "/room", **mint("c")) as c,
        ):
            assert await join(a, "a", "r1") == ()
            assert await join(b, "b", "r1") == ("a",)
            await join(c, "c", "r1", code=503)

    run(scenario())
