"""The page as a person uses it, in a real Chromium (issue 14, item 3): idle
page, call, mute, camera off, hang up, call again; the layout at a desktop
and a phone width."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from tests.browser.test_page import VIDEO_PLAYING

#: the mean brightness (0-255) of a video's current frame, drawn small on a canvas
BRIGHTNESS = """(sel) => {
    const v = document.querySelector(sel);
    if (!v || v.videoWidth === 0) return -1;
    const c = document.createElement('canvas');
    c.width = 32; c.height = 18;
    const g = c.getContext('2d');
    g.drawImage(v, 0, 0, 32, 18);
    const d = g.getImageData(0, 0, 32, 18).data;
    let sum = 0;
    for (let i = 0; i < d.length; i += 4) sum += d[i] + d[i + 1] + d[i + 2];
    return sum / (d.length / 4) / 3;
}"""

DARK = f"(sel) => {{ const b = ({BRIGHTNESS})(sel); return b >= 0 && b < 5; }}"

CALL_BUTTONS = ("#hangup", "#mute", "#camera", "#send", "#message")


def enabled(page: Any, selector: str) -> bool:
    return bool(page.is_enabled(selector))


def wait_call_open(page: Any, remote: str) -> None:
    page.wait_for_function(
        "(id) => { const s = window.rtcSignal.sessions.get(id);"
        " return s && s.channel && s.channel.readyState === 'open'; }",
        arg=remote,
        timeout=20_000,
    )
    page.wait_for_function(
        VIDEO_PLAYING, arg=f"video[data-peer='{remote}']", timeout=20_000, polling=200
    )


def assert_idle(page: Any) -> None:
    """No call: no video element shown, call buttons off, the forms usable."""
    page.wait_for_function("window.rtcSignal.role === 'idle'", timeout=10_000)
    assert page.locator("#media").is_hidden()
    assert page.locator("video:visible").count() == 0
    for selector in CALL_BUTTONS:
        assert not enabled(page, selector), selector
    assert not any(b.is_enabled() for b in page.locator("#controls button").all())
    assert "Register an ID" in page.inner_text("#guide")
    assert page.evaluate("window.rtcSignal.localStream") is None


def test_call_mute_camera_off_hang_up_and_call_again(new_page: Any, page_url: Any) -> None:
    """From an idle page: call by keyboard, mute and camera off (the callee sees
    black), hang up (both sides back to where they were), call again without
    reloading; a hang-up from the other side ends the caller's call too, and
    the callee unregisters."""
    callee = new_page(page_url("?id=u1&video=1"))
    callee.wait_for_function("window.rtcSignal.signaling === 'registered'", timeout=15_000)
    caller = new_page(page_url())
    assert_idle(caller)
    assert not enabled(caller, "#call") and not enabled(caller, "#register")  # nothing typed

    caller.check("#video")
    caller.focus("#target")
    caller.keyboard.type("u1")
    assert enabled(caller, "#call")
    caller.keyboard.press("Enter")
    wait_call_open(caller, "u1")
    caller_id = caller.evaluate("window.rtcSignal.sessions.get('u1').localId")
    wait_call_open(callee, caller_id)
    for selector in CALL_BUTTONS:
        assert enabled(caller, selector), selector
    assert not enabled(caller, "#call") and not enabled(caller, "#target")
    assert caller.locator("#local-video").is_visible()
    assert "In a call with u1" in caller.inner_text("#guide")

    seen_by_callee = f"video[data-peer='{caller_id}']"
    assert callee.evaluate(BRIGHTNESS, seen_by_callee) > 20  # the fake camera's picture
    caller.click("#mute")
    assert caller.get_attribute("#mute", "aria-pressed") == "true"
    assert caller.evaluate("window.rtcSignal.localStream.getAudioTracks().map(t => t.enabled)") == [
        False
    ]
    caller.click("#camera")
    assert caller.get_attribute("#camera", "aria-pressed") == "true"
    assert caller.evaluate("window.rtcSignal.localStream.getVideoTracks().map(t => t.enabled)") == [
        False
    ]
    # a disabled track goes on, in black: the callee's picture turns dark
    callee.wait_for_function(DARK, arg=seen_by_callee, timeout=20_000, polling=200)

    caller.click("#hangup")
    assert_idle(caller)
    callee.wait_for_function(
        "(id) => window.rtcSignal.log.some(e => e.peer === id && e.text === 'call ended')",
        arg=caller_id,
        timeout=15_000,
    )
    assert callee.evaluate("window.rtcSignal.sessions.size") == 0
    assert callee.evaluate("window.rtcSignal.signaling") == "registered"
    assert callee.locator(f"video[data-peer='{caller_id}']").count() == 0

    caller.click("#call")  # again, without reloading
    wait_call_open(caller, "u1")
    second_id = caller.evaluate("window.rtcSignal.sessions.get('u1').localId")
    wait_call_open(callee, second_id)
    assert caller.get_attribute("#mute", "aria-pressed") == "false"  # a new call starts unmuted
    assert caller.evaluate("window.rtcSignal.localStream.getTracks().every(t => t.enabled)")
    caller.fill("#message", "second call")
    caller.click("#send")
    callee.wait_for_function(
        "window.rtcSignal.log.some(e => e.kind === 'recv' && e.text === 'second call')",
        timeout=10_000,
    )

    callee.click("#hangup")  # the other side hangs up: the caller's call ends too
    assert_idle(caller)
    assert callee.evaluate("window.rtcSignal.signaling") == "registered"
    assert callee.evaluate("window.rtcSignal.errors") == []
    assert caller.evaluate("window.rtcSignal.errors") == []
    assert callee.inner_text("#register") == "Unregister"
    callee.click("#register")  # and the callee leaves: idle again, its camera released
    assert_idle(callee)
    assert callee.evaluate("window.rtcSignal.signaling") == "idle"


def overflow(page: Any) -> dict[str, Any]:
    """How wide the page is against the viewport, and which sections stick out."""
    return dict(
        page.evaluate(
            """() => ({
                scroll: document.documentElement.scrollWidth,
                inner: window.innerWidth,
                out: [...document.querySelectorAll('header, section')]
                    .filter(e => e.getBoundingClientRect().right > window.innerWidth + 0.5)
                    .map(e => e.id || e.tagName),
            })"""
        )
    )


UNLABELLED = """() => [...document.querySelectorAll('input, button')].filter(el => {
    if (el.type === 'hidden') return false;
    const name = el.getAttribute('aria-label') || [...(el.labels || [])].map(l => l.textContent)
        .join('') || (el.tagName === 'BUTTON' ? el.textContent : '');
    return !name.trim();
}).map(el => el.id || el.outerHTML)"""


def tab_order(page: Any, presses: int = 40) -> list[str]:
    """What Tab reaches from the top of the page, until focus leaves the page
    (a <video>'s own controls take several presses, all reported as VIDEO)."""
    page.mouse.click(2, 2)  # on the header: Tab starts from the top
    reached: list[str] = []
    for _ in range(presses):
        page.keyboard.press("Tab")
        name = page.evaluate(
            "() => { const e = document.activeElement;"
            " return e && e !== document.body ? (e.id || e.dataset.cmd || e.tagName) : ''; }"
        )
        if not name and reached:
            break
        reached.append(name)
    return reached


def check_fits(page: Any, state: str, artifacts: Path) -> None:
    """At 1280, 390 and 360 px wide nothing sticks out sideways (screenshots of the first two)."""
    for width, height in ((1280, 900), (390, 844), (360, 740)):
        page.set_viewport_size({"width": width, "height": height})
        page.wait_for_timeout(200)  # a layout pass (and a video frame) at the new size
        if width != 360:
            page.screenshot(path=str(artifacts / f"page-{state}-{width}.png"), full_page=True)
        fit = overflow(page)
        assert fit["scroll"] <= fit["inner"] and fit["out"] == [], (state, width, fit)
    assert page.evaluate(UNLABELLED) == []


def test_page_fits_1280_390_and_360_px_with_labelled_keyboard_controls(
    new_page: Any, page_url: Any, artifacts: Path
) -> None:
    """Idle and during a video call, at 1280, 390 and 360 px wide: nothing overflows
    sideways (no card cut off), every control has a label, Tab reaches them."""
    callee = new_page(page_url("?id=w1&video=1"))
    page = new_page(page_url())
    page.wait_for_function("window.rtcSignal.role === 'idle'", timeout=10_000)
    check_fits(page, "idle", artifacts)
    page.fill("#id", "me")
    page.fill("#target", "w1")  # with IDs typed, Register and Call can work: enabled
    assert {"id", "register", "target", "call", "video", "interval"} <= set(tab_order(page))

    callee.wait_for_function("window.rtcSignal.signaling === 'registered'", timeout=15_000)
    page.check("#video")
    page.click("#call")
    wait_call_open(page, "w1")
    page.fill("#message", "a message long enough to wrap on a phone, " * 3)
    page.click("#send")
    check_fits(page, "call", artifacts)
    in_call = set(tab_order(page))
    assert {"hangup", "mute", "camera", "ping", "stats", "message"} <= in_call, in_call
    # the README shows the page during a call at a desktop width
    shutil.copyfile(artifacts / "page-call-1280.png", artifacts / "page-1280.png")
    shutil.copyfile(artifacts / "page-call-390.png", artifacts / "page-390.png")
