"""The page against a server with tokens and an Origin allowlist, in a real
Chromium: a call between a page and `rtc-peer --token`, and the allowlist
(the server's own origin allowed, another refused). test_page.py covers the
token refusals (401/403) themselves."""

from __future__ import annotations

import time
from typing import Any

from rtc_signal.proto import tokens

SECRET = "browser-secret-0123456789"
#: a fixed port (the namespace is the test module's own) so that the allowed
#: origin is known before the server starts
PORT = 18555
ORIGIN = f"http://127.0.0.1:{PORT}"


def token(peer_id: str) -> str:
    return tokens.mint(SECRET.encode(), peer_id, int(time.time()) + 3600)


def secured_server(procs: Any) -> str:
    server = procs(
        "rtc_signal.signaling.cli",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(PORT),
        "--secret",
        SECRET,
        "--allow-origin",
        ORIGIN,
    )
    server.wait_line(r"listening on ws://", "server start", timeout=20)
    return f"ws://127.0.0.1:{PORT}"


def test_page_with_a_token_registers_and_takes_a_call_with_tokens(
    new_page: Any, procs: Any
) -> None:
    """?token= makes the page's registration pass the server's token check (its
    own origin is on the allowlist); an `rtc-peer offer --token` reaches it."""
    url = secured_server(procs)
    page = new_page(f"{ORIGIN}/?id=tb1&token={token('tb1')}&interval=0.2&count=3")
    page.wait_for_function("window.rtcSignal.signaling === 'registered'", timeout=15_000)
    offer = procs(
        "rtc_signal.peers.cli",
        "offer",
        "--target",
        "tb1",
        "--token",
        token("caller"),
        "--signal",
        url,
        "--host-address",
        "127.0.0.1",
        "--interval",
        "0.2",
        "--count",
        "3",
    )
    assert offer.popen.wait(40) == 0, offer.output()
    assert [x for x in offer.stdout if x.startswith("recv ")] == [
        f"recv browser-{n}" for n in range(1, 4)
    ]


def test_page_from_another_origin_is_refused_even_with_a_valid_token(
    new_page: Any, procs: Any, page_url: Any
) -> None:
    """The Origin allowlist in a real browser: the same page and token work from
    the allowed origin and fail (HTTP 403 at the handshake) from another one."""
    url = secured_server(procs)
    # page_url: the page as served by another server (another port: another origin)
    other = new_page(page_url(f"?id=tb3&token={token('tb3')}&server={url}"))
    other.wait_for_function("window.rtcSignal.signaling === 'error'", timeout=15_000)
    same = new_page(f"{ORIGIN}/?id=tb3&token={token('tb3')}")
    same.wait_for_function("window.rtcSignal.signaling === 'registered'", timeout=15_000)
