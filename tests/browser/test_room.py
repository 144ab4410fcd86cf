"""Rooms in a real Chromium (issue 12, item 4): rtc-signal.js's Room API and
the room page (/?room=R), with pages and an `rtc-peer join` in one room."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.browser.test_page import VIDEO_PLAYING

# Three Room objects in one page, joined in order x, y, z (no media): window.meshTest
MESH_SETUP = """async (server) => {
    const m = await import('/rtc-signal.js');
    const t = { rooms: {}, events: [], m };
    window.meshTest = t;
    for (const id of ['x', 'y', 'z']) {
        const room = await m.Room.join(server, 'mesh', { id, receiveMedia: false });
        const types = ['join', 'leave', 'connect', 'message', 'warning', 'error', 'disconnect'];
        for (const type of types) {
            room.addEventListener(type, (e) => t.events.push(
                [id, type, e.detail.member, e.detail.text ?? null]));
        }
        t.rooms[id] = room;
    }
    return Object.fromEntries(Object.entries(t.rooms).map(([id, r]) => [id, r.members]));
}"""

ALL_CONNECTED = """(pairs) => pairs.every(([a, b]) =>
    window.meshTest.rooms[a] && window.meshTest.rooms[a].connected(b))"""

# who made the offer of each connection: the type of our own local description
ROLES = """() => Object.fromEntries(Object.entries(window.meshTest.rooms).map(([id, room]) =>
    [id, Object.fromEntries(Array.from(room.sessions,
        ([member, s]) => [member, s.pc.localDescription.type]))]))"""

RECEIVED = """([id, member, text]) => window.meshTest.events.some(([to, type, from, got]) =>
    to === id && type === 'message' && from === member && got === text)"""


def pairs(*names: str) -> list[list[str]]:
    return [[a, b] for a in names for b in names if a != b]


def test_room_api_mesh_later_member_offers_and_rejoins(
    new_page: Any, page_url: Any, server_url: str
) -> None:
    """Room.join x, y, z: every pair connects once, the later joiner made the offer;
    an offer against that rule is ignored; chat reaches each member; z leaves
    (x and y see it go) and joins again (offering to both)."""
    page = new_page(page_url())
    members = page.evaluate(MESH_SETUP, server_url)
    assert members == {"x": ["y", "z"], "y": ["x", "z"], "z": ["x", "y"]}
    page.wait_for_function(ALL_CONNECTED, arg=pairs("x", "y", "z"), timeout=30_000, polling=200)
    assert page.evaluate(ROLES) == {
        "x": {"y": "answer", "z": "answer"},
        "y": {"x": "offer", "z": "answer"},
        "z": {"x": "offer", "y": "offer"},
    }

    # x joined before y: its offer to y breaks the rule, and y keeps its connection
    kept = page.evaluate(
        """() => {
            const t = window.meshTest, y = t.rooms.y, before = y.sessions.get('x');
            const offer = t.m.encodeDescription({type: 'offer', sdp: 'v=0\\r\\n'});
            y._onRequest({command: t.m.Command.OFFER,
                          request: {source: 'x', target: 'y', body: offer}});
            return y.sessions.get('x') === before && y.connected('x');
        }"""
    )
    assert kept
    events = page.evaluate("window.meshTest.events")
    assert ["y", "warning", "x"] in [e[:3] for e in events if "joined before us" in (e[3] or "")]

    reached = page.evaluate(
        "() => Object.entries(window.meshTest.rooms).map(([id, r]) => r.send('from-' + id))"
    )
    assert [sorted(r) for r in reached] == [["y", "z"], ["x", "z"], ["x", "y"]]
    for to, sender in pairs("x", "y", "z"):
        page.wait_for_function(RECEIVED, arg=[to, sender, f"from-{sender}"], timeout=10_000)

    page.evaluate("() => window.meshTest.rooms.z.leave()")
    page.wait_for_function(
        """() => ['x', 'y'].every(id => window.meshTest.events.some(
            ([to, type, member]) => to === id && type === 'leave' && member === 'z'))""",
        timeout=10_000,
    )
    assert page.evaluate("[window.meshTest.rooms.x.members, window.meshTest.rooms.y.members]") == [
        ["y"],
        ["x"],
    ]
    assert page.evaluate("window.meshTest.rooms.z.closed")

    page.evaluate(
        """async (server) => {
            const t = window.meshTest;
            t.rooms.z = await t.m.Room.join(server, 'mesh', { id: 'z', receiveMedia: false });
        }""",
        server_url,
    )
    page.wait_for_function(ALL_CONNECTED, arg=pairs("x", "y", "z"), timeout=30_000, polling=200)
    roles = page.evaluate(ROLES)
    assert roles["z"] == {"x": "offer", "y": "offer"}
    assert roles["x"]["z"] == roles["y"]["z"] == "answer"
    errors = [e for e in page.evaluate("window.meshTest.events") if e[1] in ("error", "disconnect")]
    assert errors == []


def joined(page: Any) -> None:
    page.wait_for_function("window.rtcRoom && window.rtcRoom.state === 'joined'", timeout=20_000)


def chat_from(page: Any, member: str, prefix: str, timeout: float = 30_000) -> None:
    page.wait_for_function(
        "([member, prefix]) => window.rtcRoom.log.some("
        "e => e.kind === 'chat' && e.member === member && e.text.startsWith(prefix))",
        arg=[member, prefix],
        timeout=timeout,
    )


def test_room_page_three_browsers_and_a_cli_member(
    new_page: Any, page_url: Any, server_url: str, procs: Any, artifacts: Path
) -> None:
    """/?room=r1&video=1 in three pages plus `rtc-peer join`: each page plays the
    other pages' cameras, chat typed in a page reaches every member (the CLI
    too) and the CLI's reach every page; a page that leaves is seen going."""
    names = ["a", "b", "c"]
    pages: dict[str, Any] = {}
    for name in names:
        pages[name] = new_page(page_url(f"?room=r1&video=1&id={name}"))
        joined(pages[name])
    cli = procs(
        "rtc_signal.peers.cli",
        "join",
        "--room",
        "r1",
        "--id",
        "cli",
        "--signal",
        server_url,
        "--host-address",
        "127.0.0.1",
        "--interval",
        "1",
    )
    cli.wait_line(r"joined r1 as 'cli'", "cli joined", stream="stderr", timeout=30)

    for name, page in pages.items():
        for other in names:
            if other != name:
                page.wait_for_function(
                    VIDEO_PLAYING,
                    arg=f"video[data-member='{other}']",
                    timeout=45_000,
                    polling=300,
                )
        chat_from(page, "cli", "cli-")
        tiles = page.evaluate(
            "Array.from(document.querySelectorAll('#tiles .tile'), t => t.dataset.member)"
        )
        assert sorted(tiles) == ["a", "b", "c", "cli"], (name, tiles)

    for name, page in pages.items():
        page.fill("#chat-input", f"hello from {name}")
        page.press("#chat-input", "Enter")
    for name, page in pages.items():
        for other in names:
            if other != name:
                chat_from(page, other, f"hello from {other}", timeout=10_000)
    for name in names:
        cli.wait_line(f"^{name}: hello from {name}$", f"{name}'s line at the CLI", timeout=10)

    # camera off and mute act on the page's own tracks (the call goes on)
    a = pages["a"]
    a.click("#camera")
    a.click("#mute")
    assert a.evaluate(
        """() => {
            const s = window.rtcRoom.room.localStream;
            return [s.getVideoTracks()[0].enabled, s.getAudioTracks()[0].enabled,
                    document.querySelector('#camera').getAttribute('aria-pressed'),
                    document.querySelector('#mute').getAttribute('aria-pressed')];
        }"""
    ) == [False, False, "true", "true"]
    a.click("#camera")
    a.click("#mute")
    a.screenshot(path=str(artifacts / "room.png"), full_page=True)

    pages["c"].click("#leave")
    pages["c"].wait_for_function("window.rtcRoom.state === 'left'", timeout=10_000)
    for name in ("a", "b"):
        pages[name].wait_for_function(
            "!document.querySelector(\"#tiles [data-member='c']\") && "
            "window.rtcRoom.log.some(e => e.kind === 'info' && e.text === 'c left')",
            timeout=15_000,
        )
    cli.wait_line(r"c left r1", "c's leave at the CLI", stream="stderr", timeout=15)
    for name, page in pages.items():
        assert page.evaluate("window.rtcRoom.errors") == [], (name, page.console_lines)
    assert cli.popen.poll() is None, cli.output()


def test_room_page_reports_a_refused_join(new_page: Any, page_url: Any) -> None:
    """A second page joining under a member ID already in the room is told so (409)."""
    first = new_page(page_url("?room=r2&id=same"))
    joined(first)
    second = new_page(page_url("?room=r2&id=same"))
    second.wait_for_function("window.rtcRoom && window.rtcRoom.state === 'error'", timeout=20_000)
    errors = second.evaluate("window.rtcRoom.errors")
    assert len(errors) == 1 and "409" in errors[0], errors
    assert first.evaluate("window.rtcRoom.state") == "joined"
