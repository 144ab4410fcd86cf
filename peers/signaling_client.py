"""A typed client of the signaling protocol, over one WebSocket connection.

Requests forwarded to us (Offer, Answer, Candidate) come out of
:meth:`SignalingClient.requests`; responses to what we sent are matched to
the waiting :meth:`SignalingClient.request` call in order, per command (the
server answers each connection's requests in order). Every wait has a timeout.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import ssl
import urllib.parse
from collections.abc import AsyncIterator
from types import TracebackType

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from rtc_signal.peers.errors import (
    HandshakeRefused,
    IdTaken,
    Refused,
    SignalingError,
    UnknownTarget,
)
from rtc_signal.proto import (
    Command,
    Envelope,
    ProtocolError,
    Response,
    decode,
    encode_request,
    encode_response,
)

log = logging.getLogger(__name__)

#: How long to wait for the server's response to one of our requests.
RESPONSE_TIMEOUT = 10.0
# Server codes that mean "unknown target" / "ID taken" (Go's server says 1).
_NOT_FOUND_CODES = {1, 404}
_CONFLICT_CODES = {409}


#: the endpoints the peers add to the server URL themselves
ENDPOINT_PATHS = ("/offer", "/register")


def strip_endpoint(url: str) -> tuple[str, str | None]:
    """``url`` without a trailing ``/offer`` or ``/register`` path, and the path
    removed (None when there was none).

    The server URL is given without those endpoints, which the peers add; one
    given with them would be asked for ``/offer/offer`` (404). Any other path is
    kept: a reverse proxy may serve the server under a prefix (``wss://host/rtc``).
    """
    parts = urllib.parse.urlsplit(url)
    path = parts.path.rstrip("/")
    for endpoint in ENDPOINT_PATHS:
        if path.endswith(endpoint):
            kept = path.removesuffix(endpoint)
            return urllib.parse.urlunsplit(parts._replace(path=kept)), endpoint
    return url, None


class SignalingClient:
    """One connection to the signaling server, on ``/register`` or ``/offer``."""

    def __init__(self, ws: ClientConnection, url: str) -> None:
        self._ws = ws
        self.url = url
        self._pending: dict[Command, collections.deque[asyncio.Future[Response]]] = (
            collections.defaultdict(collections.deque)
        )
        self._requests: asyncio.Queue[Envelope | None] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read(), name=f"signaling-reader {url}")
        self.closed_reason: str | None = None

    @classmethod
    async def connect(
        cls,
        base_url: str,
        path: str,
        timeout: float,
        *,
        token: str | None = None,
        cafile: str | None = None,
    ) -> SignalingClient:
        """Connect to ``base_url`` + ``path``; SignalingError if unreachable,
        HandshakeRefused if the server refuses us (e.g. HTTP 401 for the token).

        ``token`` goes in an ``Authorization: Bearer`` header (kept out of the
        URL, hence out of proxies' access logs); ``cafile`` is the CA bundle
        that verifies a ``wss://`` server (default: the system's).
        """
        url = base_url.rstrip("/") + path
        headers = None if token is None else {"Authorization": f"Bearer {token}"}
        # websockets wants ssl=True (system CAs) or a context for wss://, None for ws://
        context: ssl.SSLContext | bool | None = True if url.startswith("wss://") else None
        if cafile is not None:
            if not url.startswith("wss://"):
                raise SignalingError(f"a CA file is for wss:// URLs, not {base_url!r}")
            try:
                context = ssl.create_default_context(cafile=cafile)
            except (OSError, ssl.SSLError) as exc:
                raise SignalingError(f"cannot load the CA file {cafile}: {exc}") from None
        try:
            ws = await asyncio.wait_for(
                connect(
                    url,
                    open_timeout=None,
                    compression=None,
                    max_size=1 << 20,
                    additional_headers=headers,
                    ssl=context,
                ),
                timeout,
            )
        except TimeoutError:
            raise SignalingError(
                f"signaling server {base_url} did not answer within {timeout:g} s"
            ) from None
        except InvalidURI as exc:
            raise SignalingError(f"bad signaling URL {base_url!r}: {exc}") from None
        except InvalidStatus as exc:
            response = exc.response
            reason = response.body.decode(errors="replace").strip() if response.body else ""
            if response.status_code == 404:
                # an unknown path: the URL most likely has one it should not
                reason = (
                    f"{reason or response.reason_phrase} (no signaling endpoint at "
                    f"{url.split('?', 1)[0]}: give the server's URL without a path, "
                    "e.g. ws://host:port, or only the prefix a reverse proxy serves it under)"
                )
            raise HandshakeRefused(
                base_url, response.status_code, reason or response.reason_phrase
            ) from None
        except (OSError, InvalidHandshake) as exc:
            raise SignalingError(f"cannot reach signaling server {base_url}: {exc}") from None
        log.info("connected to %s", url.split("?", 1)[0])  # the query may hold secrets
        return cls(ws, url)

    async def __aenter__(self) -> SignalingClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    # -- sending -------------------------------------------------------------

    async def request(
        self,
        command: Command,
        source: str,
        target: str,
        body: bytes | None,
        timeout: float = RESPONSE_TIMEOUT,
    ) -> Response:
        """Send a request and wait for the server's response to it."""
        waiter: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        queue = self._pending[command.response]
        queue.append(waiter)
        try:
            await self._send(encode_request(command, source, target, body))
            return await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            raise SignalingError(
                f"no response to {command.name.lower()} within {timeout:g} s"
            ) from None
        finally:
            with contextlib.suppress(ValueError):
                queue.remove(waiter)

    async def _checked(
        self, command: Command, what: str, source: str, target: str, body: bytes | None
    ) -> None:
        """Send a request; raise Refused (or its precise subclass) unless code 0."""
        response = await self.request(command, source, target, body)
        if response.ok:
            return
        refusal = Refused
        if command is Command.INIT and response.code in _CONFLICT_CODES:
            refusal = IdTaken
        elif command is Command.OFFER and response.code in _NOT_FOUND_CODES:
            refusal = UnknownTarget
        raise refusal(what, response.code, response.msg)

    async def register(self, peer_id: str) -> None:
        """Register as an answer peer (command 1); IdTaken if the ID is in use."""
        await self._checked(Command.INIT, f"registration of {peer_id!r}", peer_id, "", None)

    async def send_offer(self, source: str, target: str, body: bytes) -> None:
        """Call ``target`` (command 3); UnknownTarget if nobody has that ID."""
        await self._checked(Command.OFFER, f"call to {target!r}", source, target, body)

    async def send_answer(self, source: str, target: str, body: bytes) -> None:
        await self._checked(Command.ANSWER, f"answer to {target!r}", source, target, body)

    async def send_candidate(self, source: str, target: str, body: bytes) -> None:
        await self._checked(Command.CANDIDATE, f"candidate for {target!r}", source, target, body)

    async def acknowledge(self, request_command: Command) -> None:
        """Answer a forwarded request with code 0, as the Go peers do."""
        await self._send(encode_response(request_command.response, 0, "ok"))

    async def _send(self, frame: bytes) -> None:
        try:
            await self._ws.send(frame)
        except ConnectionClosed:
            raise SignalingError(self._closed_message()) from None

    # -- receiving -----------------------------------------------------------

    async def requests(self) -> AsyncIterator[Envelope]:
        """Requests the server forwards to us, until the connection closes.

        Ends with SignalingError if the server closed the connection.
        """
        while True:
            envelope = await self._requests.get()
            if envelope is None:
                raise SignalingError(self._closed_message())
            yield envelope

    def _closed_message(self) -> str:
        return f"signaling server closed the connection ({self.closed_reason or 'closed'})"

    async def _read(self) -> None:
        try:
            async for frame in self._ws:
                self._dispatch(frame)
        except ConnectionClosed:
            pass
        finally:
            code, reason = self._ws.close_code, self._ws.close_reason
            self.closed_reason = f"close code {code}" + (f": {reason}" if reason else "")
            self._requests.put_nowait(None)
            error = SignalingError(self._closed_message())
            for queue in self._pending.values():
                for waiter in queue:
                    if not waiter.done():
                        waiter.set_exception(error)

    def _dispatch(self, frame: bytes | str) -> None:
        try:
            envelope = decode(frame)
        except ProtocolError as exc:
            log.warning("ignoring a malformed frame from the server: %s", exc)
            return
        if envelope.command.is_request:
            self._requests.put_nowait(envelope)
            return
        response = envelope.response
        queue = self._pending.get(envelope.command)
        if envelope.command is Command.ERROR or not queue:
            log.warning("server says %d: %s", response.code, response.msg)
            return
        waiter = queue.popleft()
        if not waiter.done():
            waiter.set_result(response)
