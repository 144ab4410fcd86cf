"""Request bodies for the plain HTTP endpoints (WHEP) that share the
WebSocket port (sans-I/O: bytes in, bytes out).

websockets parses every request on the port, and refuses any request with a
body ("unsupported request body"), as a WebSocket handshake has none. A WHEP
``POST`` carries its SDP offer in the body, so the connection passes each
request through a :class:`BodySplitter` before websockets sees it: the
head goes on without its ``Content-Length`` header, the body is kept here
for the endpoint's handler (which websockets calls with the head, through
``process_request``).
"""

from __future__ import annotations

import http
import re

from websockets.datastructures import Headers
from websockets.http11 import Response

#: a Content-Length header line, without its leading CRLF's line break
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length[ \t]*:[ \t]*([0-9]{1,12})[ \t]*(?=\r\n)", re.I)

#: heads longer than this are passed on whole: websockets refuses them itself
MAX_HEAD = 16 * 1024


class BodySplitter:
    """Splits one HTTP request into the head (for websockets) and its body."""

    __slots__ = ("_head", "body", "head_done", "length", "max_body", "received", "too_large")

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        self._head = b""
        #: the head was found (and passed on)
        self.head_done = False
        #: the body's announced length (0: no body, everything passes through)
        self.length = 0
        #: bytes of the body received so far (not kept if it is too large)
        self.received = 0
        self.too_large = False
        self.body = bytearray()

    @property
    def complete(self) -> bool:
        """The whole body is here (or it is too large, and will not be read)."""
        return self.head_done and (self.too_large or self.received >= self.length)

    @property
    def passthrough(self) -> bool:
        """No body: from now on, every byte belongs to websockets."""
        return self.head_done and self.length == 0

    def feed(self, data: bytes) -> bytes:
        """Take bytes from the socket; return those for websockets."""
        if self.head_done:
            if self.length == 0:
                return data
            self._take(data)
            return b""
        head = self._head + data
        end = head.find(b"\r\n\r\n")
        if end < 0:
            if len(head) > MAX_HEAD:
                self.head_done = True
                return head
            self._head = head
            return b""
        self._head = b""
        self.head_done = True
        head, rest = head[: end + 4], head[end + 4 :]
        lengths = {int(m.group(1)) for m in _CONTENT_LENGTH.finditer(head)}
        if len(lengths) != 1 or 0 in lengths:
            # no body (or conflicting lengths, which websockets refuses itself)
            return head + rest
        self.length = lengths.pop()
        self.too_large = self.length > self.max_body
        self._take(rest)
        return _CONTENT_LENGTH.sub(b"", head)

    def _take(self, data: bytes) -> None:
        wanted = self.length - self.received
        chunk = data[:wanted]  # bytes beyond the body (pipelining) are ignored
        self.received += len(chunk)
        if not self.too_large:
            self.body += chunk


def response(status: http.HTTPStatus, headers: Headers, body: bytes) -> Response:
    """A whole plain HTTP response; the server closes the connection after it
    (websockets serves one request per connection)."""
    headers["Content-Length"] = str(len(body))
    headers["Connection"] = "close"
    return Response(status.value, status.phrase, headers, body)
