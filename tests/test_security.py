"""The server's security features against a real in-process server on loopback:
token auth (401 at the handshake, 403 for another ID), the Origin allowlist,
the connection limit (503), the message rate limit (429, then close 1008), the
idle timeout for connections without an ID (1008) and TLS (wss://)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from rtc_signal.proto import Command, decode, encode_request, tokens
from rtc_signal.signaling.limits import RateLimit
from rtc_signal.signaling.router import FORBIDDEN, NOT_FOUND, TOO_MANY_REQUESTS
from rtc_signal.signaling.server import ServerConfig, SignalingServer
from tests.conftest import (
    WAIT,
    client,
    connect,
    eventually,
    expect_response,
    offer,
    offer_frame,
    recv_frame,
    register,
    relay_offer,
    run,
    running_server,
    within,
)
from tests.helpers_tls import self_signed_cert

SECRET = b"server-secret-0123456789"


def http_get(url: str) -> str:
    """A plain HTTP GET; the status line and body (urllib raises on 503)."""
    try:
        with urllib.request.urlopen(url, timeout=WAIT) as response:
            return f"HTTP/1.1 {response.status}\n" + response.read().decode()
    except urllib.error.HTTPError as exc:
        return f"HTTP/1.1 {exc.code}\n" + exc.read().decode()


def token(peer_id: str, ttl: float = 3600, secret: bytes = SECRET) -> str:
    return tokens.mint(secret, peer_id, int(time.time() + ttl))


def bearer(tok: str) -> dict[str, Any]:
    return {"additional_headers": {"Authorization": f"Bearer {tok}"}}


async def refused(url: str, path: str, **kwargs: Any) -> tuple[int, str]:
    """Connect, expecting an HTTP refusal of the handshake: (status, body)."""
    with pytest.raises(InvalidStatus) as info:
        ws = await connect(url, path, **kwargs)
        await ws.close()
    response = info.value.response
    return response.status_code, response.body.decode()


async def close_of(ws: ClientConnection, timeout: float = WAIT) -> tuple[int | None, str | None]:
    await within(ws.wait_closed(), timeout)
    return ws.close_code, ws.close_reason


# -- tokens --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("presented", "reason"),
    [
        (None, "a token is required"),
        ("garbage!", "not base64url"),
        (token("alice", secret=b"another-secret-0123456789"), "signature does not match"),
        (token("alice", ttl=-1), "expired"),
    ],
    ids=["missing", "malformed", "forged", "expired"],
)
@pytest.mark.parametrize("path", ["/register", "/offer"])
def test_bad_or_missing_token_is_refused_with_401_and_a_reason(
    presented: str | None, reason: str, path: str
) -> None:
    """With a secret, no valid token means HTTP 401 (with the reason and
    WWW-Authenticate: Bearer), whether sent as header or query parameter."""

    async def main() -> None:
        async with running_server(secret=SECRET) as server:
            ways: list[tuple[str, dict[str, Any]]] = [(path, {})]
            if presented is not None:
                ways = [(path, bearer(presented)), (f"{path}?token={presented}", {})]
            for where, kwargs in ways:
                with pytest.raises(InvalidStatus) as info:
                    await connect(server.url, where, **kwargs)
                response = info.value.response
                assert response.status_code == 401
                assert reason in response.body.decode()
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert len(server.router) == 0

    run(main())


@pytest.mark.parametrize("how", ["header", "query"])
def test_valid_tokens_register_and_call(how: str) -> None:
    """alice's and bob's tokens (header or ?token=) let them register and call."""

    def where(path: str, tok: str) -> tuple[str, dict[str, Any]]:
        return (path, bearer(tok)) if how == "header" else (f"{path}?token={tok}", {})

    async def main() -> None:
        async with running_server(secret=SECRET) as server:
            path, kwargs = where("/register", token("alice"))
            async with client(server.url, path, **kwargs) as alice:
                await register(alice, "alice")
                path, kwargs = where("/offer", token("bob"))
                async with client(server.url, path, **kwargs) as bob:
                    await relay_offer(bob, alice, "bob", "alice")

    run(main())


def test_registering_or_offering_as_another_id_than_the_tokens_is_403() -> None:
    """A valid token for alice does not let its holder use the ID mallory (Response 403)."""

    async def main() -> None:
        async with running_server(secret=SECRET) as server:
            async with client(server.url, "/register", **bearer(token("alice"))) as ws:
                await ws.send(encode_request(Command.INIT, "mallory", ""))
                response = await expect_response(ws, Command.INIT_RESPONSE, FORBIDDEN)
                assert "token" in response.msg
                await register(ws, "alice")  # the connection stays usable
                async with client(server.url, "/offer", **bearer(token("bob"))) as caller:
                    await offer(caller, "mallory", "alice", expect_code=FORBIDDEN)
                    await relay_offer(caller, ws, "bob", "alice")
            await eventually(lambda: server.router.answer_peers() == [])

    run(main())


def test_open_server_accepts_clients_without_token_and_ignores_tokens() -> None:
    """Without a secret the server runs open, as before: any ID, tokens ignored."""

    async def main() -> None:
        async with running_server() as server, client(server.url, "/register?token=x") as ws:
            await register(ws, "anyone")

    run(main())


# -- origins ----------------------------------------------------------------------------------


def test_origin_allowlist() -> None:
    """Allowed origin: accepted; other origin: 403; no Origin (not a browser): accepted."""

    async def main() -> None:
        async with running_server(allow_origins=("https://app.example",)) as server:
            async with client(server.url, "/register", origin="https://app.example") as ws:
                await register(ws, "browser")
            status, body = await refused(server.url, "/register", origin="https://evil.example")
            assert status == 403 and "https://evil.example" in body
            async with client(server.url, "/register") as ws:
                await register(ws, "cli")

    run(main())


# -- connection limit -----------------------------------------------------------------------------


def test_connections_beyond_the_limit_get_503_until_one_leaves() -> None:
    """With --max-connections 2, a third handshake gets HTTP 503 (with Retry-After);
    once a connection has gone, a new one is admitted."""

    async def main() -> None:
        async with running_server(max_connections=2) as server:
            first = await connect(server.url, "/register")
            async with client(server.url, "/register") as second:
                await register(second, "two")
                with pytest.raises(InvalidStatus) as info:
                    await connect(server.url, "/offer")
                response = info.value.response
                assert response.status_code == 503
                assert "too many connections" in response.body.decode()
                assert response.headers["Retry-After"]
                page = await asyncio.to_thread(http_get, server.url.replace("ws", "http") + "/")
                assert page.startswith("HTTP/1.1 503"), page  # the pages too
                await first.close()
                async with asyncio.timeout(WAIT):
                    while True:  # the slot frees once the server has closed its side
                        try:
                            third = await connect(server.url, "/register")
                            break
                        except InvalidStatus:
                            await asyncio.sleep(0.02)
                await register(third, "three")
                await third.close()

    run(main())


# -- rate limit ---------------------------------------------------------------------------------


def test_flood_gets_429_then_is_closed_and_others_are_unaffected() -> None:
    """Over the rate: 429 replies (in the request's response command); still over
    it after the grace period: close 1008. A well-behaved peer keeps working."""

    async def main() -> None:
        # a low rate: even if the 30 sends spread over a slow second, most are over it
        limit = RateLimit(rate=5, burst=5, grace=1.0)
        async with (
            running_server(rate_limit=limit) as server,
            client(server.url, "/register") as quiet,
        ):
            await register(quiet, "quiet")
            flooder = await connect(server.url, "/offer")
            frame = offer_frame("flooder", "nobody")
            for _ in range(30):
                await flooder.send(frame)
            codes = []
            for _ in range(30):
                envelope = decode(await recv_frame(flooder))
                assert envelope.command == Command.OFFER_RESPONSE
                codes.append(envelope.response.code)
            assert codes[:5] == [NOT_FOUND] * 5  # the burst is routed (unknown target)
            assert codes.count(TOO_MANY_REQUESTS) >= 15, codes
            # keep flooding (and reading): closed once the grace period is over
            started = time.monotonic()
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(WAIT):
                    while True:
                        await flooder.send(frame)
                        await asyncio.sleep(0.005)
                        while True:
                            try:
                                await asyncio.wait_for(flooder.recv(), 0.001)
                            except TimeoutError:
                                break
            code, reason = await close_of(flooder)
            assert code == 1008 and "rate limit" in (reason or "")
            assert time.monotonic() - started < WAIT
            async with client(server.url, "/offer") as caller:
                await relay_offer(caller, quiet, "caller", "quiet")

    run(main())


def test_after_a_burst_over_the_limit_the_connection_is_served_again() -> None:
    """Reading pauses after a 429 (the flood waits in TCP), then resumes: a client
    back under the limit gets normal replies on the same connection."""

    async def main() -> None:
        limit = RateLimit(rate=5, burst=3, grace=5.0, pause=0.1)
        async with (
            running_server(rate_limit=limit) as server,
            client(server.url, "/register") as alice,
            client(server.url, "/offer") as bob,
        ):
            await register(alice, "alice")
            frame = offer_frame("bob", "alice")
            for _ in range(10):
                await bob.send(frame)
            codes = [decode(await recv_frame(bob)).response.code for _ in range(10)]
            assert codes.count(TOO_MANY_REQUESTS) >= 4, codes
            await asyncio.sleep(0.6)  # back under the limit: the bucket refills
            while True:  # drain what was forwarded to alice
                try:
                    await asyncio.wait_for(alice.recv(), 0.1)
                except TimeoutError:
                    break
            await relay_offer(bob, alice, "bob", "alice")

    run(main())


async def _raw_flood(port: int, frame: bytes, stop: asyncio.Event) -> int:
    """A raw client on /offer that writes pre-masked copies of ``frame`` as fast
    as its socket takes them and never reads; returns the frames written."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET /offer HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    assert b" 101 " in await within(reader.readuntil(b"\r\n\r\n"))
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(frame))
    header = bytes([0x82, 0x80 | 126]) + len(frame).to_bytes(2, "big") + mask
    chunk = (header + masked) * 64
    written = 0
    try:
        while not stop.is_set():
            writer.write(chunk)
            written += 64
            # (a timeout: the server stopped reading us; keep on until told to stop)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(writer.drain(), 0.5)
    except ConnectionError:
        pass  # closed by the server (1008, then TCP)
    finally:
        writer.close()
    return written


@pytest.mark.parametrize(
    "limit", [None, RateLimit(rate=100, burst=50, grace=5.0)], ids=["no-limit", "limit"]
)
def test_others_are_served_while_one_client_floods(limit: RateLimit | None) -> None:
    """While a client writes offers as fast as TCP allows (and never reads), 30
    offers between two other peers all arrive, with or without the rate limit
    (no timing assertion beyond the usual bounded waits)."""

    async def main() -> None:
        async with (
            running_server(rate_limit=limit) as server,
            client(server.url, "/register") as sink,
            client(server.url, "/register") as alice,
            client(server.url, "/offer") as bob,
        ):
            await register(sink, "sink")
            await register(alice, "alice")
            stop = asyncio.Event()
            flood = asyncio.create_task(
                _raw_flood(server.port, offer_frame("flooder", "sink"), stop)
            )
            try:
                await eventually(lambda: server.router.stats.frames > 200)
                for _ in range(30):
                    await relay_offer(bob, alice, "bob", "alice")
                assert not flood.done()  # (the flood went on meanwhile)
            finally:
                stop.set()
                written = await within(flood, 10)
            assert written > 200

    run(main())


def test_shutdown_is_bounded_with_a_client_that_neither_reads_nor_closes() -> None:
    """A flooder that never reads fills the server's buffer towards it; closing
    the server still ends within about the close timeout (the stuck TCP
    connection is dropped) and everybody else gets 1001."""

    async def main() -> None:
        server = SignalingServer(ServerConfig(host="127.0.0.1", port=0, ping_interval=None))
        await within(server.start())
        stop = asyncio.Event()
        flood = asyncio.create_task(_raw_flood(server.port, offer_frame("f", "sink"), stop))
        try:
            async with (
                client(server.url, "/register") as sink,
                client(server.url, "/register") as bystander,
            ):
                await register(sink, "sink")  # (the flood's target: it stops reading too)
                await register(bystander, "bystander")
                await eventually(
                    lambda: any(
                        ws.transport.get_write_buffer_size() > 0
                        for ws in server._connections.values()
                    ),
                    # filling the kernel's loopback buffers first takes a while
                    # on a loaded machine
                    timeout=30,
                )
                started = time.monotonic()
                await within(server.close(), 3 * server.config.close_timeout + 1)
                assert time.monotonic() - started < 3 * server.config.close_timeout + 1
                code, _ = await close_of(bystander)
                assert code == 1001
        finally:
            stop.set()
            await within(flood, 10)

    run(main())


def test_a_ping_flood_from_a_client_that_never_reads_is_held_back_by_tcp() -> None:
    """websockets answers every ping with a pong; a client that floods pings
    and never reads must not grow the server's write buffer without bound:
    the server stops reading it once its pongs back up. Others are served."""

    async def main() -> None:
        async with running_server() as server, client(server.url, "/register") as alice:
            await register(alice, "alice")
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(
                b"GET /offer HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n"
            )
            assert b" 101 " in await within(reader.readuntil(b"\r\n\r\n"))
            mask = b"\x01\x02\x03\x04"
            ping = (
                bytes([0x89, 0x80 | 125]) + mask + bytes(ord("x") ^ mask[i % 4] for i in range(125))
            )
            chunk, sent, blocked = ping * 1000, 0, False
            try:
                while sent < 64 * 2**20 and not blocked:  # (at most 64 MiB of pings)
                    writer.write(chunk)
                    sent += len(chunk)
                    try:
                        await asyncio.wait_for(writer.drain(), 1.0)
                    except TimeoutError:
                        blocked = True  # the server stopped reading us
                buffered = max(
                    ws.transport.get_write_buffer_size() for ws in server._server.all_connections
                )
                assert blocked, f"the server read {sent} bytes of pings without pause"
                assert buffered < 2**20, f"{buffered} bytes of pongs buffered"
                async with client(server.url, "/offer") as bob:
                    await relay_offer(bob, alice, "bob", "alice")
            finally:
                writer.transport.abort()

    run(main())


# -- idle timeout ----------------------------------------------------------------------------------


def test_connections_that_never_take_an_id_are_closed_after_the_idle_timeout() -> None:
    """/register without Init and /offer without Offer: closed with 1008;
    a registered peer and a caller that offered stay."""

    async def main() -> None:
        async with running_server(idle_timeout=0.3) as server:
            lazy_answer = await connect(server.url, "/register")
            lazy_offer = await connect(server.url, "/offer")
            async with client(server.url, "/register") as alice:
                await register(alice, "alice")
                async with client(server.url, "/offer") as bob:
                    await relay_offer(bob, alice, "bob", "alice")
                    for ws in (lazy_answer, lazy_offer):
                        code, reason = await close_of(ws)
                        assert code == 1008 and "within 0.3 s" in (reason or "")
                    await asyncio.sleep(0.3)
                    await relay_offer(bob, alice, "bob", "alice")
            await eventually(lambda: len(server.router) == 0)

    run(main())


# -- TLS -------------------------------------------------------------------------------------


def test_tls_server_serves_wss_to_clients_that_trust_its_certificate(tmp_path: Path) -> None:
    """With a certificate the URL is wss://; a client trusting it registers and
    calls; one without the CA fails certificate verification."""
    cert = self_signed_cert(tmp_path)

    async def main() -> None:
        async with running_server(certfile=str(cert.certfile), keyfile=str(cert.keyfile)) as server:
            assert server.url.startswith("wss://127.0.0.1:")
            trusting = ssl.create_default_context(cafile=str(cert.certfile))
            async with client(server.url, "/register", ssl=trusting) as alice:
                await register(alice, "alice")
                async with client(server.url, "/offer", ssl=trusting) as bob:
                    await relay_offer(bob, alice, "bob", "alice")
            with pytest.raises(ssl.SSLCertVerificationError):
                await connect(server.url, "/register", ssl=ssl.create_default_context())

    run(main())
