"""The JavaScript client's frames, run in Chromium, against the Python (Go-exact) codec."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from rtc_signal import proto

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "go-demo-session.jsonl"

# Strings where JSON encoders differ: Go escapes <, >, & and U+2028/9.
TRICKY = [
    "plain-id",
    "",
    "<script>&amp;</script>",
    "line\u2028sep\u2029para",
    'quote " backslash \\ slash /',
    "\x00\x01\x08\x0c\n\r\t\x1f\x7f",
    "émoji 🎥 ünïcode",
]

ENCODE_ALL = """async ([cases, bodies]) => {
    const m = await import('/rtc-signal.js');
    const out = [];
    for (const [command, source, target] of cases) {
        for (const body of bodies) {
            const bytes = body === null ? null : Uint8Array.from(body);
            out.push(m.encodeRequest(command, source, target, bytes));
        }
    }
    for (const [command, source] of cases) out.push(m.encodeResponse(command, 409, source));
    out.push(new TextDecoder().decode(m.encodeDescription({type: 'offer', sdp: 'v=0\\r\\n<&>'})));
    return out;
}"""


def test_js_client_frames_are_byte_identical_to_the_go_encoding(
    new_page: Any, page_url: Any
) -> None:
    """encodeRequest/encodeResponse/encodeDescription in the browser emit Go's exact bytes."""
    page = new_page(page_url())
    cases = [
        [command, s, t]
        for command in (1, 2, 3, 4)
        for s, t in zip(TRICKY, TRICKY[::-1], strict=True)
    ]
    bodies: list[list[int] | None] = [
        None,
        [],
        list(b"candidate:1 1 udp 1 127.0.0.1 9 typ host"),
        list(range(256)),
    ]
    got = page.evaluate(ENCODE_ALL, [cases, bodies])
    expected = []
    for command, source, target in cases:
        for body in bodies:
            raw = None if body is None else bytes(body)
            expected.append(
                proto.encode_request(proto.Command(command), source, target, raw).decode()
            )
    for command, source, _ in cases:
        expected.append(proto.encode_response(proto.Command(command + 100), 409, source).decode())
    expected.append(proto.SessionDescription(type="offer", sdp="v=0\r\n<&>").to_json().decode())
    assert got == expected


def test_js_client_decodes_every_golden_frame(new_page: Any, page_url: Any) -> None:
    """decodeFrame reads the Go demo's recorded frames as the Python codec does."""
    page = new_page(page_url())
    frames = [json.loads(line)["frame"] for line in GOLDEN.read_text().splitlines()]
    decoded = page.evaluate(
        """async (frames) => {
            const m = await import('/rtc-signal.js');
            return frames.map((f) => {
                const d = m.decodeFrame(f);
                if (d.response) return [d.command, d.response.code, d.response.msg];
                const body = d.request.body === null ? null : Array.from(d.request.body);
                return [d.command, d.request.source, d.request.target, body];
            });
        }""",
        frames,
    )
    for frame, got in zip(frames, decoded, strict=True):
        envelope = proto.decode(frame)
        if envelope.command.value > 100:
            assert got == [envelope.command.value, envelope.response.code, envelope.response.msg]
        else:
            request = envelope.request
            body = None if request.body is None else list(request.body)
            assert got == [envelope.command.value, request.source, request.target, body]


def test_js_client_rejects_what_go_rejects(new_page: Any, page_url: Any) -> None:
    """URL-safe or unpadded base64, non-JSON and unknown commands throw SignalingError."""
    page = new_page(page_url())
    payload = base64.b64encode(b'{"source":"ab","target":"b","body":null}').decode()
    assert payload.endswith("=")
    bad = [
        "not json",
        '{"payload":"' + payload + '"}',
        '{"command":9,"payload":"' + payload + '"}',
        '{"command":1,"payload":"' + payload.rstrip("=") + '"}',
        '{"command":1,"payload":"' + base64.urlsafe_b64encode(b'{"body":"??>"}').decode() + '"}',
    ]
    errors = page.evaluate(
        """async (frames) => {
            const m = await import('/rtc-signal.js');
            return frames.map((f) => {
                try { m.decodeFrame(f); return null; } catch (e) { return e.name; }
            });
        }""",
        bad,
    )
    assert errors == ["SignalingError"] * len(bad)
