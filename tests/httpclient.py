"""A minimal raw HTTP/1.1 client for the server's plain HTTP endpoints (one
request per connection, as the server closes after each response)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from tests.conftest import WAIT, within


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes


async def http_request(
    url: str,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    timeout: float = WAIT,
) -> HttpResponse:
    """Send one request to the server at ``url`` (ws://host:port) and read the reply."""
    host, port = url.removeprefix("ws://").rsplit(":", 1)
    reader, writer = await within(asyncio.open_connection(host, int(port)))
    try:
        fields = {"Host": f"{host}:{port}", **(headers or {})}
        if body or method in ("POST", "PATCH"):
            fields.setdefault("Content-Length", str(len(body)))
        head = "".join(f"{k}: {v}\r\n" for k, v in fields.items())
        writer.write(f"{method} {path} HTTP/1.1\r\n{head}\r\n".encode() + body)
        raw = await within(reader.read(), timeout)  # the server closes after one response
    finally:
        writer.close()
    head_bytes, _, rest = raw.partition(b"\r\n\r\n")
    status_line, *lines = head_bytes.decode("latin-1").split("\r\n")
    parsed = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    return HttpResponse(int(status_line.split()[1]), parsed, rest)
