"""Request bodies for the plain HTTP endpoints (WHEP) that share the
WebSocket port (sans-I/O: bytes in, bytes out).

websockets parses every request on the port, and refuses any request with a
body ("unsupported request body"), as a WebSocket handshake has none. A WHEP
``POST`` carries its SDP offer in the body, so the connection passes each
request through a :class:`BodySplitter` before websockets sees it: the
head goes on without its ``Content-Length`` header, the body is kept here
for the endpoint's handler (which websockets calls with the head, through
``process_request``).

The splitter also keeps from websockets what it must not parse before the
response: whatever follows a plain HTTP request (a pipelined request, or
junk), and a body it cannot delimit (``Transfer-Encoding``, bad
``Content-Length``), for which it leaves a :attr:`BodySplitter.refusal`
(411 or 400) that the server sends instead of handling the request.
websockets would take those bytes for WebSocket frames, fail the connection
before its HTTP response, and lose that response.
"""

from __future__ import annotations

import http
import re

from websockets.datastructures import Headers
from websockets.http11 import Response

#: the header lines the splitter reads (name, space before the colon,
#: value), each without its line's CRLF: those that say how long a body is,
#: and Upgrade (a WebSocket handshake)
_FIELDS = re.compile(
    rb"\r\n(content-length|transfer-encoding|upgrade)([ \t]*):([^\r\n]*)", re.IGNORECASE
)
#: the body-length header lines, removed from the head websockets parses
_FRAMING = re.compile(rb"\r\n(?:content-length|transfer-encoding)[ \t]*:[^\r\n]*", re.IGNORECASE)
#: a Content-Length value (any number of digits: a long one is too large)
_DIGITS = re.compile(rb"[0-9]+")
#: longer Content-Length values are over any body limit
_MAX_DIGITS = 18
#: the opcodes of WebSocket frames (continuation, text, binary, close, ping, pong)
_OPCODES = frozenset((0, 1, 2, 8, 9, 10))

#: heads longer than this are passed on whole: websockets refuses them itself
MAX_HEAD = 16 * 1024


class BodySplitter:
    """Splits one HTTP request into the head (for websockets) and its body."""

    __slots__ = (
        "_head",
        "body",
        "head_done",
        "length",
        "max_body",
        "passthrough",
        "received",
        "refusal",
        "too_large",
    )

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        self._head = b""
        #: the head was found (and passed on)
        self.head_done = False
        #: from now on, every byte belongs to websockets: the request is a
        #: WebSocket handshake (without a body), or a head too long for us
        self.passthrough = False
        #: the body's announced length (0: no body)
        self.length = 0
        #: bytes of the body received so far (not kept if it is too large)
        self.received = 0
        self.too_large = False
        self.body = bytearray()
        #: (status, reason) to answer instead of handling the request: its
        #: body cannot be delimited (411, 400), or a handshake is followed by
        #: bytes that are not a WebSocket frame (400)
        self.refusal: tuple[http.HTTPStatus, str] | None = None

    @property
    def complete(self) -> bool:
        """The whole body is here (or it is too large, or refused, and will not be read)."""
        return self.head_done and (
            self.too_large or self.refusal is not None or self.received >= self.length
        )

    def feed(self, data: bytes) -> bytes:
        """Take bytes from the socket; return those for websockets."""
        if self.head_done:
            if self.passthrough:
                return data
            self._take(data)  # the body; what follows it is dropped
            return b""
        head = self._head + data
        end = head.find(b"\r\n\r\n")
        if end < 0:
            if len(head) > MAX_HEAD:
                self.head_done = self.passthrough = True
                return head
            self._head = head
            return b""
        self._head = b""
        self.head_done = True
        head, rest = head[: end + 4], head[end + 4 :]
        lengths: list[bytes] = []
        encoded = upgrade = malformed = False
        for name, space, value in _FIELDS.findall(head):
            key = name.lower()
            if key == b"upgrade":
                upgrade = upgrade or b"websocket" in value.lower()
                continue
            malformed = malformed or space != b""  # (RFC 9112 forbids it)
            if key == b"transfer-encoding":
                encoded = True
            else:
                lengths.append(value.strip(b" \t"))
        self.refusal = _framing_refusal(lengths, encoded, malformed)
        if self.refusal is None and lengths:
            digits = lengths[0].lstrip(b"0")
            self.length = int(digits or b"0") if len(digits) <= _MAX_DIGITS else self.max_body + 1
        if self.refusal is None and self.length == 0:
            if not upgrade:
                # a plain request, answered and closed: what follows it (a
                # pipelined request, junk) is dropped
                return head  # (with its Content-Length: 0, which websockets accepts)
            if not rest or _may_start_frame(rest):
                # A WebSocket handshake: frames may follow it (a client that
                # does not wait for the 101), which websockets parses.
                self.passthrough = True
                return head + rest
            self.refusal = (
                http.HTTPStatus.BAD_REQUEST,
                "the bytes after the handshake request are not a WebSocket frame",
            )
            return head
        # a body (or a refusal: nothing more is read); websockets gets the
        # head without the headers it refuses, which were checked here
        self.too_large = self.length > self.max_body
        self._take(rest)
        return _FRAMING.sub(b"", head)

    def _take(self, data: bytes) -> None:
        wanted = self.length - self.received
        chunk = data[:wanted]  # bytes beyond the body (pipelining) are ignored
        self.received += len(chunk)
        if not self.too_large:
            self.body += chunk


def _framing_refusal(
    lengths: list[bytes], encoded: bool, malformed: bool
) -> tuple[http.HTTPStatus, str] | None:
    """Why a body with these Content-Length values (and a Transfer-Encoding
    if ``encoded``) cannot be delimited (RFC 9112, section 6.3), or None."""
    if encoded:
        return (
            http.HTTPStatus.LENGTH_REQUIRED,
            "send the request body with a Content-Length (Transfer-Encoding is not supported)",
        )
    if malformed or not all(_DIGITS.fullmatch(value) for value in lengths):
        return http.HTTPStatus.BAD_REQUEST, "invalid Content-Length header"
    # (several Content-Length: 0, which some devices send, websockets accepts)
    if len(lengths) > 1 and any(value.strip(b"0") for value in lengths):
        return http.HTTPStatus.BAD_REQUEST, "repeated Content-Length header"
    return None


def _may_start_frame(data: bytes) -> bool:
    """Whether ``data`` may begin a client's WebSocket frame sent before the
    handshake's response: a known opcode, no reserved bit (no extension is
    agreed yet), and the mask bit, which every client frame has."""
    if data[0] & 0x70 or data[0] & 0x0F not in _OPCODES:
        return False
    return len(data) < 2 or data[1] & 0x80 != 0


def response(
    status: http.HTTPStatus, headers: Headers, body: bytes, *, head: bool = False
) -> Response:
    """A whole plain HTTP response; the server closes the connection after it
    (websockets serves one request per connection). ``head``: the response
    to a HEAD request, the headers of ``body`` without it."""
    headers["Content-Length"] = str(len(body))
    headers["Connection"] = "close"
    return Response(status.value, status.phrase, headers, b"" if head else body)
