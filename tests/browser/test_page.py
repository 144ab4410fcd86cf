"""The page and JavaScript client in a real Chromium, against real peers."""

from __future__ import annotations

import re
import time
from typing import Any

from rtc_signal.proto import tokens


def test_page_loads_and_registers_as_answer_peer(new_page: Any, page_url: Any) -> None:
    """?id=NAME registers the page as an answer peer and shows it."""
    page = new_page(page_url("?id=b1"))
    page.wait_for_function(
        "window.rtcSignal && window.rtcSignal.signaling === 'registered'", timeout=15_000
    )
    assert "registered as b1" in page.inner_text("#signaling-state")


PEER_ARGS = ["--host-address", "127.0.0.1", "--interval", "0.2"]


def page_received(page: Any, prefix: str, count: int, timeout: float = 20_000) -> list[str]:
    """Wait until the page logged ``count`` received messages starting with ``prefix``."""
    page.wait_for_function(
        "([prefix, count]) => window.rtcSignal.log.filter("
        "e => e.kind === 'recv' && e.text.startsWith(prefix)).length >= count",
        arg=[prefix, count],
        timeout=timeout,
    )
    return [
        str(text)
        for text in page.evaluate(
            "(prefix) => window.rtcSignal.log.filter("
            "e => e.kind === 'recv' && e.text.startsWith(prefix)).map(e => e.text)",
            prefix,
        )
    ]


def test_browser_answer_peer_takes_a_call_from_rtc_peer_offer(
    new_page: Any, page_url: Any, server_url: str, procs: Any
) -> None:
    """A page registered with ?id= answers `rtc-peer offer`; timer messages flow both ways."""
    page = new_page(page_url("?id=b2&interval=0.2&count=5"))
    page.wait_for_function("window.rtcSignal.signaling === 'registered'", timeout=15_000)
    offer = procs(
        "rtc_signal.peers.cli",
        "offer",
        "--target",
        "b2",
        "--signal",
        server_url,
        "--count",
        "5",
        *PEER_ARGS,
    )
    assert offer.popen.wait(40) == 0, offer.output()
    received = [line for line in offer.stdout if line.startswith("recv ")]
    assert received == [f"recv browser-{n}" for n in range(1, 6)], offer.output()
    texts = page_received(page, "offer-", 5)
    assert texts == [f"offer-{n}" for n in range(1, 6)]


def test_rtc_peer_answer_takes_a_call_from_the_browser(
    new_page: Any, page_url: Any, server_url: str, procs: Any
) -> None:
    """`rtc-peer answer` answers a page calling it with ?target=; the browser trickles."""
    answer = procs(
        "rtc_signal.peers.cli", "answer", "--id", "a3", "--signal", server_url, *PEER_ARGS
    )
    answer.wait_line("registered as 'a3'", "answer peer registration", stream="stderr")
    page = new_page(page_url("?target=a3&interval=0.2&count=5"))
    texts = page_received(page, "answer-", 5)
    assert texts == [f"answer-{n}" for n in range(1, 6)]
    answer.wait_for(
        lambda: len([x for x in answer.stdout if x.startswith("recv browser-")]) >= 5,
        "answer peer receiving the browser's messages",
    )
    received = [line for line in answer.stdout if line.startswith("recv ")]
    assert received[:5] == [f"recv browser-{n}" for n in range(1, 6)]


def test_two_browsers_exchange_timer_and_typed_messages(new_page: Any, page_url: Any) -> None:
    """Two pages connect through our server; timer and typed messages arrive both ways."""
    callee = new_page(page_url("?id=bb1&interval=0.2&count=3"))
    callee.wait_for_function("window.rtcSignal.signaling === 'registered'", timeout=15_000)
    caller = new_page(page_url("?target=bb1&id=bb2&interval=0.2&count=3"))
    assert page_received(caller, "browser-", 3) == ["browser-1", "browser-2", "browser-3"]
    assert page_received(callee, "browser-", 3) == ["browser-1", "browser-2", "browser-3"]
    caller.fill("#message", "typed by the caller <b>not markup</b>")
    caller.click("#send-form button")
    assert page_received(callee, "typed", 1) == ["typed by the caller <b>not markup</b>"]
    # shown as text, never interpreted as HTML
    assert callee.locator("#log b").count() == 0
    assert "bb2: typed by the caller <b>not markup</b>" in callee.inner_text("#log")
    assert "bb2: connection connected" in callee.inner_text("#peer-list")


VIDEO_PLAYING = """(sel) => {
    const v = document.querySelector(sel);
    if (!v || v.videoWidth === 0) return false;
    v.rtcSignalTimes = (v.rtcSignalTimes || []).concat([v.currentTime]);
    const t = v.rtcSignalTimes;
    return t.length > 2 && t[t.length - 1] > t[0];
}"""


def test_video_call_between_two_browsers_shows_remote_video(
    new_page: Any, page_url: Any, artifacts: Any
) -> None:
    """?video=1 on both pages: each receives the other's fake camera, and it plays."""
    callee = new_page(page_url("?id=v1&video=1"))
    callee.wait_for_function("window.rtcSignal.signaling === 'registered'", timeout=15_000)
    caller = new_page(page_url("?target=v1&id=v2&video=1&interval=0.5"))
    for page, remote in ((callee, "v2"), (caller, "v1")):
        selector = f"video[data-peer='{remote}']"
        page.wait_for_function(VIDEO_PLAYING, arg=selector, timeout=20_000, polling=200)
        width, height = page.evaluate(
            "(s) => { const v = document.querySelector(s); return [v.videoWidth, v.videoHeight]; }",
            selector,
        )
        assert width > 0 and height > 0
    page_received(callee, "browser-", 2)
    opened = callee.evaluate(
        "window.rtcSignal.log.filter(e => e.text === 'data channel open').length"
    )
    assert opened == 1
    callee.screenshot(path=str(artifacts / "video-call-callee.png"), full_page=True)
    caller.screenshot(path=str(artifacts / "video-call-caller.png"), full_page=True)
    assert (artifacts / "video-call-callee.png").stat().st_size > 10_000


def test_page_passes_its_token_and_shows_refusals(new_page: Any, start_server: Any) -> None:
    """&token= reaches the server: the right token registers, a token for
    another ID is refused (403) and no token fails the handshake; both shown."""
    secret = "browser-test-secret-0123456789"
    url = start_server("--secret", secret).replace("ws://", "http://", 1)
    expires = int(time.time()) + 300
    good = tokens.mint(tokens.check_secret(secret), "tok1", expires)
    other = tokens.mint(tokens.check_secret(secret), "someone-else", expires)
    page = new_page(f"{url}/?id=tok1&token={good}")
    page.wait_for_function("window.rtcSignal.signaling === 'registered'", timeout=15_000)
    refused = new_page(f"{url}/?id=tok2&token={other}")
    refused.wait_for_function("window.rtcSignal.errors.length > 0", timeout=15_000)
    assert "403" in refused.evaluate("window.rtcSignal.errors[0]")
    assert refused.evaluate("window.rtcSignal.signaling") == "error"
    anonymous = new_page(f"{url}/?id=tok3")
    anonymous.wait_for_function("window.rtcSignal.errors.length > 0", timeout=15_000)
    assert "cannot connect" in anonymous.evaluate("window.rtcSignal.errors[0]")
    assert anonymous.locator("#log .error").count() == 1


def received_from(page: Any, peer: str) -> list[str]:
    return [
        str(text)
        for text in page.evaluate(
            "(peer) => window.rtcSignal.log.filter("
            "e => e.kind === 'recv' && e.peer === peer).map(e => e.text)",
            peer,
        )
    ]


def test_page_answer_peer_reconnects_after_a_server_restart(new_page: Any, procs: Any) -> None:
    """`rtc-signal serve` killed and restarted on its port: the page's call goes
    on meanwhile (nothing lost, in order), the page registers again, and a new
    caller reaches it."""
    first = procs("rtc_signal.signaling.cli", "serve", "--host", "127.0.0.1", "--port", "0")
    match = re.search(r"ws://\S+", first.wait_line("listening on", "server start"))
    assert match is not None
    url = match.group(0)
    page = new_page(url.replace("ws://", "http://", 1) + "/?id=rc&interval=0.2")
    page.wait_for_function("window.rtcSignal.signaling === 'registered'", timeout=15_000)
    procs(
        "rtc_signal.peers.cli",
        "offer",
        "--target",
        "rc",
        "--id",
        "caller",
        "--signal",
        url,
        *PEER_ARGS,
    )
    page.wait_for_function(
        "window.rtcSignal.log.filter(e => e.kind === 'recv' && e.peer === 'caller').length >= 3",
        timeout=20_000,
    )
    first.popen.kill()
    first.popen.wait(10)
    page.wait_for_function(
        "window.rtcSignal.log.some(e => e.text.includes('reconnecting in'))", timeout=10_000
    )
    during = len(received_from(page, "caller"))
    page.wait_for_function(
        "(n) => window.rtcSignal.log.filter(e => e.kind === 'recv' && e.peer === 'caller')"
        ".length >= n + 5",
        arg=during,
        timeout=10_000,
    )  # the call goes on without the server
    second = procs(
        "rtc_signal.signaling.cli", "serve", "--host", "127.0.0.1", "--port", url.rsplit(":", 1)[1]
    )
    second.wait_line("listening on", "server restart")
    page.wait_for_function(
        "window.rtcSignal.log.some(e => e.text.startsWith('registered again'))", timeout=20_000
    )
    assert page.evaluate("window.rtcSignal.signaling") == "registered"
    newcomer = procs(
        "rtc_signal.peers.cli", "offer", "--target", "rc", "--id", "newcomer", "--signal", url,
        "--count", "2", *PEER_ARGS,
    )  # fmt: skip
    assert newcomer.popen.wait(30) == 0, newcomer.output()
    got = received_from(page, "caller")
    assert got == [f"offer-{n}" for n in range(1, len(got) + 1)]
    assert len(got) >= during + 5
    assert received_from(page, "newcomer")[:2] == ["offer-1", "offer-2"]
