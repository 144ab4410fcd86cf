"""HTTP edges of the plain requests on the signaling port (issue 11, item 6):
HEAD on the pages, bodies that cannot be delimited (411, 400), and bytes
after a request, which websockets 17.4 took for frames before the response
(an AssertionError traceback in its log, and no response)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from rtc_signal.signaling.pages import ROUTES
from tests.conftest import WAIT, client, recv_envelope, register, run, running_server, within
from tests.httpclient import HttpResponse, http_request

PAGE_PATHS = sorted(ROUTES)
SDP = b"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
HANDSHAKE = (
    b"GET /register HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)
JUNK = b"garbage \x00\xff bytes\r\n\r\n"


async def exchange(url: str, data: bytes, timeout: float = WAIT) -> bytes:
    """Send raw ``data`` on a new connection; everything the server sends until it closes."""
    host, port = url.removeprefix("ws://").rsplit(":", 1)
    reader, writer = await within(asyncio.open_connection(host, int(port)))
    try:
        writer.write(data)
        return await within(reader.read(), timeout)
    finally:
        writer.close()


def parse(raw: bytes) -> HttpResponse:
    """A raw response (as in tests.httpclient); the Date header is dropped."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, f"no complete response: {raw[:200]!r}"
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    headers.pop("date", None)
    return HttpResponse(int(status_line.split()[1]), headers, body)


def request(method: str, path: str, *fields: str, body: bytes = b"") -> bytes:
    """A raw request with exactly these header lines (repeats allowed)."""
    head = "".join(f"{field}\r\n" for field in ("Host: 127.0.0.1", *fields))
    return f"{method} {path} HTTP/1.1\r\n{head}\r\n".encode() + body


async def page_still_served(url: str) -> None:
    """The canary: a normal GET / gets the whole page."""
    response = await http_request(url, "GET", "/")
    assert response.status == 200
    assert int(response.headers["content-length"]) == len(response.body) > 0


def problems(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Log records at ERROR or above, or with a traceback."""
    return [
        f"{r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.levelno >= logging.ERROR or r.exc_info
    ]


# -- HEAD ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", PAGE_PATHS)
def test_head_gets_the_headers_of_get_and_no_body(path: str) -> None:
    """HEAD on a page path: GET's status and headers (length, type, ETag), no body."""

    async def main() -> None:
        async with running_server() as server:
            got = parse(await exchange(server.url, request("GET", path)))
            head = parse(await exchange(server.url, request("HEAD", path)))
            assert got.status == head.status == 200
            assert head.headers == got.headers
            assert int(head.headers["content-length"]) == len(got.body) > 0
            assert head.body == b""
            await page_still_served(server.url)

    run(main())


def test_head_with_a_matching_etag_gets_304_like_get() -> None:
    """HEAD revalidates as GET does: If-None-Match with the ETag gives 304."""

    async def main() -> None:
        async with running_server() as server:
            etag = parse(await exchange(server.url, request("HEAD", "/app.js"))).headers["etag"]
            fields = f"If-None-Match: {etag}"
            got = parse(await exchange(server.url, request("GET", "/app.js", fields)))
            head = parse(await exchange(server.url, request("HEAD", "/app.js", fields)))
            assert got.status == head.status == 304
            assert head.headers == got.headers and head.body == got.body == b""
            await page_still_served(server.url)

    run(main())


def test_other_methods_on_pages_get_405_allowing_get_and_head() -> None:
    """PUT / gets 405 and names both methods a page may be read with."""

    async def main() -> None:
        async with running_server() as server:
            response = parse(await exchange(server.url, request("PUT", "/", "Content-Length: 0")))
            assert response.status == 405 and response.headers["allow"] == "GET, HEAD"
            await page_still_served(server.url)

    run(main())


# -- bodies that cannot be delimited ----------------------------------------------------

CHUNKED_BODY = b"%x\r\n%s\r\n0\r\n\r\n" % (len(SDP), SDP)


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/whep/cam"), ("PATCH", "/whep/cam/some-session")]
)
def test_chunked_whep_bodies_get_411(method: str, path: str) -> None:
    """WHEP POST/PATCH with Transfer-Encoding: chunked: 411 Length Required, with CORS."""

    async def main() -> None:
        async with running_server() as server, client(server.url, "/register") as ws:
            await register(ws, "cam")
            fields = ("Content-Type: application/sdp", "Transfer-Encoding: chunked")
            raw = await exchange(server.url, request(method, path, *fields, body=CHUNKED_BODY))
            response = parse(raw)
            assert response.status == 411, raw
            assert b"Content-Length" in response.body
            assert response.headers["access-control-allow-origin"] == "*"
            with pytest.raises(TimeoutError):  # the peer got no offer
                await recv_envelope(ws, timeout=0.3)
            await page_still_served(server.url)

    run(main())


@pytest.mark.parametrize(
    "lengths",
    [
        ("Content-Length: 5", "Content-Length: 6"),  # conflicting
        ("Content-Length: 5", "Content-Length: 5"),  # duplicated
        ("Content-Length: 5, 5",),  # a list
        ("Content-Length: five",),
        ("Content-Length: -5",),
        ("Content-Length : 5",),  # space before the colon
    ],
)
def test_bad_content_lengths_on_whep_get_400(lengths: tuple[str, ...]) -> None:
    """Conflicting, repeated or non-numeric Content-Length: 400 Bad Request."""

    async def main() -> None:
        async with running_server() as server:
            fields = ("Content-Type: application/sdp", *lengths)
            raw = await exchange(server.url, request("POST", "/whep/cam", *fields, body=b"v=0\r\n"))
            response = parse(raw)
            assert response.status == 400, raw
            assert b"Content-Length" in response.body
            await page_still_served(server.url)

    run(main())


def test_transfer_encoding_beside_a_content_length_gets_411() -> None:
    """Both framings at once (a smuggling pattern): Transfer-Encoding wins, 411."""

    async def main() -> None:
        async with running_server() as server:
            fields = ("Content-Length: 5", "Transfer-Encoding: chunked")
            raw = await exchange(
                server.url, request("POST", "/whep/cam", *fields, body=b"0\r\n\r\n")
            )
            assert parse(raw).status == 411
            await page_still_served(server.url)

    run(main())


def test_undelimited_bodies_are_refused_on_every_path() -> None:
    """Pages and the WebSocket paths refuse them too (411, 400), never a silent close."""

    async def main() -> None:
        async with running_server() as server:
            chunked = request("POST", "/", "Transfer-Encoding: chunked", body=b"0\r\n\r\n")
            assert parse(await exchange(server.url, chunked)).status == 411
            twice = request("GET", "/register", "Content-Length: 1", "Content-Length: 2")
            assert parse(await exchange(server.url, twice)).status == 400
            await page_still_served(server.url)

    run(main())


def test_several_zero_content_lengths_are_still_accepted() -> None:
    """Content-Length: 0 twice (some devices send it; websockets accepts it) is no body."""

    async def main() -> None:
        async with running_server() as server:
            raw = request("GET", "/style.css", "Content-Length: 0", "Content-Length: 0")
            assert parse(await exchange(server.url, raw)).status == 200

    run(main())


# -- bytes after a request -----------------------------------------------------------------


def test_junk_after_a_request_is_ignored_and_logs_no_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """GET / + junk, 50 times: always the whole page, never an ERROR or traceback."""
    caplog.set_level(logging.DEBUG, logger="websockets")

    async def main() -> None:
        async with running_server() as server:
            for _ in range(50):
                response = parse(await exchange(server.url, request("GET", "/") + JUNK))
                assert response.status == 200
                assert int(response.headers["content-length"]) == len(response.body)
            await page_still_served(server.url)

    run(main())
    assert problems(caplog) == []


def test_junk_after_a_whep_request_and_its_body_logs_no_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """WHEP requests with and without a body, then junk: answered, nothing logged as ERROR."""

    async def main() -> None:
        async with running_server() as server:
            for length in (0, len(SDP)):
                fields = ("Content-Type: application/sdp", f"Content-Length: {length}")
                raw = request("POST", "/whep/nobody", *fields, body=SDP[:length]) + JUNK
                for _ in range(10):
                    assert parse(await exchange(server.url, raw)).status in (400, 404)
            await page_still_served(server.url)

    run(main())
    assert problems(caplog) == []


def test_a_handshake_followed_by_junk_gets_400(caplog: pytest.LogCaptureFixture) -> None:
    """Bytes after a handshake that cannot start a WebSocket frame: 400, no traceback."""

    async def main() -> None:
        async with running_server() as server:
            for _ in range(20):
                response = parse(await exchange(server.url, HANDSHAKE + JUNK))
                assert response.status == 400 and b"WebSocket frame" in response.body
            await page_still_served(server.url)
            async with client(server.url, "/register") as ws:  # handshakes still work
                assert (await register(ws, "after-junk")).code == 0

    run(main())
    assert problems(caplog) == []


@pytest.mark.parametrize("origin", ["https://ok.example", "https://evil.example"])
def test_an_invalid_frame_before_the_response_is_dropped_quietly(
    caplog: pytest.LogCaptureFixture, origin: str
) -> None:
    """A frame websockets rejects before the response to a handshake (accepted,
    or refused with 403): closed, logged at INFO, no traceback."""
    caplog.set_level(logging.INFO)
    # a masked, fragmented ping: it starts like a frame, websockets fails it (1002)
    bad_frame = b"\x09\x80\x00\x00\x00\x00"
    handshake = HANDSHAKE.replace(b"\r\n\r\n", f"\r\nOrigin: {origin}\r\n\r\n".encode())

    async def main() -> None:
        async with running_server(allow_origins=("https://ok.example",)) as server:
            for _ in range(20):
                # no response is possible: websockets' EOF went out first
                assert await exchange(server.url, handshake + bad_frame) == b""
            await page_still_served(server.url)

    run(main())
    assert problems(caplog) == []
    assert any("not a WebSocket frame" in r.getMessage() for r in caplog.records)
