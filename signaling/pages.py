"""The web page and JavaScript client that ``rtc-signal serve`` serves beside
its WebSocket endpoints (sans-I/O: a request path and headers in, a status,
headers and body out).

The files live in ``signaling/static/`` and are read once, when the server
starts, so a request costs a dictionary lookup. They are served with an ETag
(a hash of the content) so a browser revalidates instead of downloading them
again, and with a Content-Security-Policy that only allows the page's own
scripts: the page shows what remote peers send, and must never run it.
"""

from __future__ import annotations

import hashlib
import http
from dataclasses import dataclass
from importlib import resources

#: URL path -> file in signaling/static
ROUTES = {
    "/": "index.html",
    "/index.html": "index.html",
    "/rtc-signal.js": "rtc-signal.js",
    "/app.js": "app.js",
    "/style.css": "style.css",
    # the page links the SVG; /favicon.ico is what browsers and other clients
    # ask for without looking at the page (favicon.svg drawn at 32x32, PNG in ICO)
    "/favicon.svg": "favicon.svg",
    "/favicon.ico": "favicon.ico",
    # the room page (/?room=R): app.js imports room.js, which links room.css
    "/room.js": "room.js",
    "/room.css": "room.css",
}

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".ico": "image/vnd.microsoft.icon",
}

# ws:/wss: so that ?server= may name another signaling server; blob: and
# mediastream: for <video> elements playing WebRTC tracks.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; "
    "connect-src 'self' ws: wss:; media-src 'self' blob: mediastream:; "
    "img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


@dataclass(frozen=True)
class PageResponse:
    status: http.HTTPStatus
    headers: list[tuple[str, str]]
    body: bytes


def load_assets() -> dict[str, Asset]:
    """Read every routed file from the package (once, at start-up)."""
    root = resources.files("rtc_signal.signaling") / "static"
    assets: dict[str, Asset] = {}
    for path, name in ROUTES.items():
        body = (root / name).read_bytes()
        suffix = name[name.rindex(".") :]
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        assets[path] = Asset(body, CONTENT_TYPES[suffix], etag)
    return assets


class Pages:
    """Answers the plain HTTP GET requests that are not WebSocket handshakes."""

    def __init__(self, assets: dict[str, Asset] | None = None) -> None:
        self.assets = load_assets() if assets is None else assets

    def handles(self, path: str) -> bool:
        return path in self.assets

    def respond(self, path: str, if_none_match: str | None) -> PageResponse:
        """The response to ``GET path`` (``path`` without its query string)."""
        asset = self.assets.get(path)
        if asset is None:
            return PageResponse(
                http.HTTPStatus.NOT_FOUND,
                [("Content-Type", "text/plain; charset=utf-8")],
                b"rtc-signal: no such page; the page is at /, WebSocket peers use "
                b"/register and /offer\n",
            )
        headers = [
            ("ETag", asset.etag),
            # revalidate every time: a new server version must not run an old client
            ("Cache-Control", "no-cache"),
            ("X-Content-Type-Options", "nosniff"),
        ]
        if if_none_match is not None and asset.etag in _etags(if_none_match):
            return PageResponse(http.HTTPStatus.NOT_MODIFIED, headers, b"")
        headers.append(("Content-Type", asset.content_type))
        # an SVG opened on its own is a document too: no scripts there either
        if asset.content_type.startswith(("text/html", "image/svg+xml")):
            headers.append(("Content-Security-Policy", CONTENT_SECURITY_POLICY))
            headers.append(("Referrer-Policy", "no-referrer"))
        return PageResponse(http.HTTPStatus.OK, headers, asset.body)


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",")}
