"""The page and JavaScript client served over plain HTTP beside the WebSocket endpoints."""

from __future__ import annotations

from rtc_signal.signaling.pages import ROUTES, Pages
from tests.conftest import ServerFactory, client, register, run, running_server
from tests.httpclient import http_request


async def http_get(url: str, path: str, *headers: str) -> tuple[int, dict[str, str], bytes]:
    """GET ``path``; returns (status, lower-cased headers, body)."""
    fields = dict(h.split(": ", 1) for h in headers)
    response = await http_request(url, "GET", path, fields)
    return response.status, response.headers, response.body


def test_root_serves_the_page_with_a_strict_content_security_policy() -> None:
    """GET / is the HTML page; it may only run its own scripts (no inline, no eval)."""

    async def main() -> None:
        async with running_server() as server:
            status, headers, body = await http_get(server.url, "/")
            assert status == 200
            assert headers["content-type"] == "text/html; charset=utf-8"
            assert b'<script type="module" src="/app.js">' in body
            assert int(headers["content-length"]) == len(body)
            csp = headers["content-security-policy"]
            assert "script-src 'self';" in csp and "unsafe" not in csp
            assert headers["x-content-type-options"] == "nosniff"

    run(main())


def test_javascript_client_module_is_served_as_javascript() -> None:
    """/rtc-signal.js and /app.js come with a JavaScript content type and an ETag."""

    async def main() -> None:
        async with running_server() as server:
            for path in ("/rtc-signal.js", "/app.js"):
                status, headers, body = await http_get(server.url, path)
                assert status == 200
                assert headers["content-type"] == "text/javascript; charset=utf-8"
                assert headers["etag"].startswith('"')
            status, _, body = await http_get(server.url, "/rtc-signal.js")
            assert b"export class AnswerPeer" in body and b"export async function call" in body

    run(main())


def test_favicon_is_served_as_an_icon_and_linked_as_svg() -> None:
    """/favicon.ico is a real ICO (not the 404 browsers used to get); the page
    links /favicon.svg, served as SVG under the page's CSP (no scripts in it)."""

    async def main() -> None:
        async with running_server() as server:
            status, headers, body = await http_get(server.url, "/favicon.ico")
            assert status == 200
            assert headers["content-type"] == "image/vnd.microsoft.icon"
            # ICONDIR: reserved 0, type 1 (icon), at least one image
            assert body[:4] == b"\x00\x00\x01\x00" and body[4] >= 1
            assert headers["etag"].startswith('"')
            _, _, page = await http_get(server.url, "/")
            assert b'<link rel="icon" href="/favicon.svg" type="image/svg+xml">' in page
            status, headers, body = await http_get(server.url, "/favicon.svg")
            assert status == 200 and headers["content-type"] == "image/svg+xml"
            assert body.startswith(b"<svg ") and b"<script" not in body
            assert "script-src 'self'" in headers["content-security-policy"]

    run(main())


def test_matching_etag_gets_304_without_a_body() -> None:
    """A browser revalidating with If-None-Match gets 304 Not Modified."""

    async def main() -> None:
        async with running_server() as server:
            _, headers, _ = await http_get(server.url, "/style.css")
            status, _, body = await http_get(
                server.url, "/style.css", f"If-None-Match: {headers['etag']}"
            )
            assert (status, body) == (304, b"")
            status, _, body = await http_get(server.url, "/style.css", 'If-None-Match: "other"')
            assert status == 200 and body

    run(main())


def test_unknown_paths_get_404_and_the_signaling_paths_still_upgrade() -> None:
    """Pages do not shadow the protocol: /register and /offer stay WebSocket-only."""

    async def main() -> None:
        async with running_server() as server:
            status, _, body = await http_get(server.url, "/nope")
            assert status == 404 and b"/register" in body
            status, _, _ = await http_get(server.url, "/register")
            assert status == 426  # Upgrade Required: a WebSocket endpoint
            async with client(server.url, "/register") as ws:
                response = await register(ws, "still-works", text=True)
                assert response.code == 0

    run(main())


def test_pages_can_be_turned_off() -> None:
    """ServerConfig(serve_pages=False): GET / is 404, as before the page existed."""

    async def main() -> None:
        async with running_server(serve_pages=False) as server:
            status, _, _ = await http_get(server.url, "/")
            assert status == 404

    run(main())


def test_every_route_names_a_packaged_file() -> None:
    """Each route has its file in the package (a missing one would fail at start-up)."""
    pages = Pages()
    assert set(pages.assets) == set(ROUTES)
    assert all(asset.body for asset in pages.assets.values())


def test_cli_serves_the_page_and_no_pages_turns_it_off(
    server_process_factory: ServerFactory,
) -> None:
    """`rtc-signal serve` serves / by default; `--no-pages` answers 404 instead."""
    _, with_pages = server_process_factory()
    _, without = server_process_factory("--no-pages")

    async def main() -> None:
        assert (await http_get(with_pages, "/"))[0] == 200
        assert (await http_get(without, "/"))[0] == 404
        assert (await http_get(without, "/rtc-signal.js"))[0] == 404

    run(main())


def test_pages_are_read_with_get_only() -> None:
    """POST / gets 405 with Allow: GET, HEAD (a body never reaches websockets' parser)."""

    async def main() -> None:
        async with running_server() as server:
            response = await http_request(server.url, "POST", "/", body=b"x=1")
            assert response.status == 405
            assert response.headers["allow"] == "GET, HEAD"

    run(main())
