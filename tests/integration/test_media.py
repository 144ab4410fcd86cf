"""Media end to end: `rtc-peer answer --video` and `rtc-peer offer --record`
as real processes over 127.0.0.1, with clips made here by PyAV."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import pytest
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription

from rtc_signal.peers.ice import IceSettings, restrict_host_addresses
from rtc_signal.peers.media import h264
from rtc_signal.peers.media.receive import encoded_frames
from rtc_signal.peers.media.testclip import make_clip
from rtc_signal.peers.signaling_client import SignalingClient
from rtc_signal.proto import Command, SessionDescription, decode_description
from tests.conftest import run
from tests.integration.procs import (
    LOOPBACK,
    FilePeer,
    run_peer,
    server,
    start_file_peer,
    wait_file_registered,
    wait_until,
)
from tests.integration.rtsp_server import RtspServer

_STATS_URL = re.compile(r"stats on (http://\S+/stats)")


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """2 s 640x360 H.264 Baseline clips: MPEG-TS, MP4 (SPS/PPS in-band and
    extradata-only), and a Main-profile one with B-frames."""
    d = tmp_path_factory.mktemp("clips")
    return {
        "ts": make_clip(d / "clip.ts"),
        "mp4": make_clip(d / "clip.mp4"),
        "mp4-global": make_clip(d / "global.mp4", repeat_headers=False),
        "bframes": make_clip(d / "bframes.ts", bframes=2, profile="main"),
    }


def camera(tmp_path: Path, url: str, *args: str, name: str = "cam") -> FilePeer:
    peer = start_file_peer(
        "answer",
        "--id",
        name,
        "--signal",
        url,
        *LOOPBACK,
        "--stats-port",
        "0",
        *args,
        stdin=subprocess.DEVNULL,
        directory=tmp_path,
        name=name,
    )
    wait_file_registered(peer)
    return peer


def stats(peer: FilePeer) -> dict[str, Any]:
    match = _STATS_URL.search(peer.stderr())
    assert match, peer.stderr()
    with urllib.request.urlopen(match.group(1), timeout=5) as response:
        data: dict[str, Any] = json.load(response)
    return data


def viewer(tmp_path: Path, url: str, name: str, *args: str, target: str = "cam") -> FilePeer:
    return start_file_peer(
        "offer",
        "--target",
        target,
        "--id",
        name,
        "--signal",
        url,
        *LOOPBACK,
        *args,
        stdin=subprocess.DEVNULL,
        directory=tmp_path,
        name=name,
    )


def finish(peer: FilePeer, timeout: float = 30) -> None:
    code = peer.wait(timeout)
    assert code == 0, peer.stderr()


def stop_camera(peer: FilePeer) -> None:
    if peer.proc.poll() is None:
        peer.proc.terminate()
    peer.wait(10)


def decoded_frames(path: Path) -> tuple[int, int, int]:
    """(frames, width, height) of the first video stream, decoded."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return frames, stream.codec_context.width, stream.codec_context.height


def streaming(peer: FilePeer, viewers: int) -> dict[str, Any]:
    """Poll /stats until ``viewers`` viewers are each being sent packets."""
    snapshot: dict[str, Any] = {}

    def ready() -> bool:
        nonlocal snapshot
        snapshot = stats(peer)
        figures = [v for v in snapshot["viewers"].values() if v and v["packets_per_s"] > 0]
        return len(figures) >= viewers

    wait_until(ready, f"{viewers} viewers receiving packets", timeout=20)
    return snapshot


def recorded_by_viewers(
    tmp_path: Path,
    url: str,
    cam: FilePeer,
    count: int,
    suffix: str,
    duration: str,
    extra: Callable[[int], list[str]] = lambda i: [],
) -> tuple[dict[str, Any], list[FilePeer]]:
    """``count`` viewers v0, v1, ... each record ``v<i><suffix>`` for
    ``duration`` s; returns the camera's stats while all of them stream, and
    the viewers (once they all finished with exit 0)."""
    viewers = [
        viewer(
            tmp_path,
            url,
            f"v{i}",
            "--record",
            str(tmp_path / f"v{i}{suffix}"),
            "--duration",
            duration,
            *extra(i),
        )
        for i in range(count)
    ]
    snapshot = streaming(cam, count)
    for v in viewers:
        finish(v)
    return snapshot, viewers


def test_three_viewers_record_one_passed_through_ts_clip(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    """Three `offer --record` viewers of one `answer --video clip.ts` each write
    an MP4 that decodes to >= 30 frames, while the sender has no video encoder
    open and one shared input (3 viewers, kbps/packets per viewer in /stats)."""
    with server() as url:
        cam = camera(tmp_path, url, "--video", str(clips["ts"]))
        try:
            snapshot, _ = recorded_by_viewers(tmp_path, url, cam, 3, ".mp4", "5")
        finally:
            stop_camera(cam)
    assert snapshot["process"]["video_encoders_open"] == 0, snapshot
    assert snapshot["total"]["viewers"] == 3
    assert snapshot["total"]["kbps"] > 0 and snapshot["total"]["packets_per_s"] > 0
    (source,) = snapshot["sources"]
    assert (source["mode"], source["input_codec"], source["output"]) == (
        "passthrough",
        "h264",
        "video/H264",
    )
    for i in range(3):
        frames, width, height = decoded_frames(tmp_path / f"v{i}.mp4")
        assert frames >= 30, (i, frames)
        assert (width, height) == (640, 360)
        assert "recorded" in (tmp_path / f"v{i}.err").read_text()


def test_mp4_source_without_repeated_sps_pps_gets_them_injected(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    """An MP4 (avcC) whose SPS/PPS live only in the extradata is converted to
    Annex-B with the parameter sets put before each IDR; an MKV recording of
    it decodes."""
    with server() as url:
        cam = camera(tmp_path, url, "--video", str(clips["mp4-global"]))
        try:
            rec = viewer(tmp_path, url, "v", "--record", str(tmp_path / "v.mkv"), "--duration", "4")
            snapshot = streaming(cam, 1)
            finish(rec)
        finally:
            stop_camera(cam)
    assert snapshot["sources"][0]["sps_pps_injected"] > 0, snapshot
    frames, width, height = decoded_frames(tmp_path / "v.mkv")
    assert frames >= 30 and (width, height) == (640, 360)


def test_mp4_source_with_in_band_parameter_sets_records_to_ts(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    """An ordinary MP4 clip passes through too; the viewer records MPEG-TS."""
    with server() as url:
        cam = camera(tmp_path, url, "--video", str(clips["mp4"]))
        try:
            rec = viewer(tmp_path, url, "v", "--record", str(tmp_path / "v.ts"), "--duration", "4")
            finish(rec)
        finally:
            stop_camera(cam)
    frames, _, _ = decoded_frames(tmp_path / "v.ts")
    assert frames >= 30


def test_b_frames_are_refused_with_a_clear_message(tmp_path: Path, clips: dict[str, Path]) -> None:
    """A source with B-frames is refused before registering: exit 1 and why."""
    with server() as url:
        peer = start_file_peer(
            "answer",
            "--id",
            "cam",
            "--signal",
            url,
            *LOOPBACK,
            "--video",
            str(clips["bframes"]),
            stdin=subprocess.DEVNULL,
            directory=tmp_path,
            name="cam",
        )
        code = peer.wait(20)
    assert code == 1
    assert "B-frames" in peer.stderr() and "--transcode" in peer.stderr()
    assert "registered" not in peer.stderr()


def test_transcode_opens_one_encoder_per_viewer(tmp_path: Path, clips: dict[str, Path]) -> None:
    """--transcode decodes once and encodes per viewer: the encoder count that
    passthrough keeps at 0 shows 2 with two viewers (the check is real)."""
    with server() as url:
        cam = camera(tmp_path, url, "--video", str(clips["ts"]), "--transcode")
        try:
            snapshot, _ = recorded_by_viewers(tmp_path, url, cam, 2, ".mkv", "5")
        finally:
            stop_camera(cam)
    assert snapshot["process"]["video_encoders_open"] == 2, snapshot
    assert snapshot["sources"][0]["mode"] == "frames"
    for i in range(2):
        assert decoded_frames(tmp_path / f"v{i}.mkv")[0] >= 30


def test_testsrc_is_encoded_once_for_all_viewers(tmp_path: Path) -> None:
    """The generated pattern is encoded once (one encoder for two viewers),
    a keyframe can be requested, and both recordings decode."""
    with server() as url:
        cam = camera(tmp_path, url, "--video", "testsrc:320x240@30")
        try:
            snapshot, viewers = recorded_by_viewers(
                tmp_path,
                url,
                cam,
                2,
                ".mp4",
                "4",
                extra=lambda i: ["--control", "keyframe"] if i == 0 else [],
            )
        finally:
            stop_camera(cam)
    assert snapshot["process"]["video_encoders_open"] == 1, snapshot
    assert snapshot["sources"][0]["mode"] == "encode-once"
    (reply,) = [json.loads(line) for line in viewers[0].stdout().decode().splitlines()]
    assert reply == {"id": 1, "ok": True, "cmd": "keyframe", "result": {"requested": True}}
    for i in range(2):
        frames, width, height = decoded_frames(tmp_path / f"v{i}.mp4")
        assert frames >= 30 and (width, height) == (320, 240)


def test_control_commands_round_trip(tmp_path: Path, clips: dict[str, Path]) -> None:
    """ping echoes t, stats reports this viewer, keyframe says a passed-through
    file cannot, pause/resume report the state; unknown and malformed requests
    get ok:false replies (with the id when there is one), and the camera goes
    on serving."""
    controls = [
        "ping",
        "stats",
        "keyframe",
        "pause",
        "resume",
        '{"cmd": "reboot", "id": 70}',
        '{"cmd": "ping", "id": 71}',
        '{"cmd": "ping", "id": "x", "t": 1}',
        "{not json",
        "ping",
    ]
    args = [a for c in controls for a in ("--control", c)]
    with server() as url:
        cam = camera(tmp_path, url, "--video", str(clips["ts"]))
        try:
            ctl = viewer(tmp_path, url, "ctl", *args)
            finish(ctl)
            assert cam.proc.poll() is None, cam.stderr()
        finally:
            stop_camera(cam)
    replies = [json.loads(line) for line in ctl.stdout().decode().splitlines()]
    assert len(replies) == len(controls)
    ping, stat, key, pause, resume, unknown, no_t, bad_id, not_json, last = replies
    assert ping["ok"] and ping["cmd"] == "ping" and ping["id"] == 1
    assert isinstance(ping["result"]["t"], float) and ping["rtt_ms"] >= 0
    assert stat["ok"] and stat["result"]["viewer"] is not None
    assert stat["result"]["total"]["viewers"] == 1
    assert (
        key["ok"]
        and key["result"]["requested"] is False
        and "passed through" in key["result"]["reason"]
    )
    assert pause["result"] == {"paused": True} and resume["result"] == {"paused": False}
    assert unknown == {"id": 70, "ok": False, "error": unknown["error"]}
    assert "unknown command 'reboot'" in unknown["error"]
    assert no_t["id"] == 71 and not no_t["ok"] and "t" in no_t["error"]
    assert bad_id["id"] is None and not bad_id["ok"] and "id" in bad_id["error"]
    assert not_json["id"] is None and "not JSON" in not_json["error"]
    assert last["ok"] and last["id"] == 10


def test_paused_viewer_gets_no_video_while_the_other_does(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    """pause stops this viewer's video only; the other viewer keeps receiving."""
    with server() as url:
        cam = camera(tmp_path, url, "--video", str(clips["ts"]))
        try:
            paused = viewer(tmp_path, url, "paused", "--control", "pause", "--duration", "4")
            watching = viewer(tmp_path, url, "watching", "--duration", "4")
            finish(paused)
            finish(watching)
        finally:
            stop_camera(cam)
    counts = {}
    for peer, name in ((paused, "paused"), (watching, "watching")):
        match = re.search(r"received (\d+) video frames", peer.stderr())
        counts[name] = int(match.group(1)) if match else 0
    assert counts["watching"] >= 30, counts
    assert counts["paused"] < 20, counts


def test_rtsp_source_is_passed_through_to_a_recording_viewer(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    """An rtsp:// camera (a small RTSP server in this test, RTP over TCP) is
    pulled once and passed through; the viewer's recording decodes."""
    with RtspServer(clips["ts"]) as rtsp, server() as url:
        cam = camera(tmp_path, url, "--video", rtsp)
        try:
            rec = viewer(tmp_path, url, "v", "--record", str(tmp_path / "v.mp4"), "--duration", "4")
            snapshot = streaming(cam, 1)
            finish(rec)
        finally:
            stop_camera(cam)
    assert snapshot["sources"][0]["mode"] == "passthrough"
    assert snapshot["process"]["video_encoders_open"] == 0
    frames, width, height = decoded_frames(tmp_path / "v.mp4")
    assert frames >= 30 and (width, height) == (640, 360)


def test_camera_reconnects_to_an_rtsp_source_that_comes_back(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    """When the RTSP server goes away the camera peer keeps its viewers and
    says it is reconnecting; when the server is back, the video goes on (the
    viewer's recording spans the outage and decodes; a new viewer records)."""
    with server() as url:
        first = RtspServer(clips["ts"])
        rtsp = first.__enter__()
        port = int(rtsp.rsplit(":", 1)[1].split("/")[0])
        cam = camera(tmp_path, url, "--video", rtsp)
        second: RtspServer | None = None
        try:
            across = viewer(
                tmp_path,
                url,
                "across",
                "--record",
                str(tmp_path / "across.mkv"),
                "--duration",
                "14",
            )
            streaming(cam, 1)
            first.stop()
            wait_until(lambda: "reconnecting in" in cam.stderr(), "the camera to notice", 20)
            second = RtspServer(clips["ts"], port=port)
            second.__enter__()
            wait_until(lambda: "reconnected" in cam.stderr(), "the camera to reconnect", 30)
            after = viewer(
                tmp_path, url, "after", "--record", str(tmp_path / "after.mp4"), "--duration", "3"
            )
            finish(after)
            finish(across, timeout=40)
            snapshot = stats(cam)
            assert cam.proc.poll() is None, cam.stderr()
        finally:
            stop_camera(cam)
            if second is not None:
                second.stop()
    assert snapshot["sources"][0]["reconnects"] >= 1
    assert decoded_frames(tmp_path / "after.mp4")[0] >= 30
    frames, width, _ = decoded_frames(tmp_path / "across.mkv")
    assert frames >= 60 and width == 640
    match = re.search(r"received (\d+) video frames", (tmp_path / "across.err").read_text())
    assert match and int(match.group(1)) == frames


async def _media_only_call(
    url: str, target: str, video_codecs: list[str] | None = None
) -> list[Any]:
    """Call ``target`` as a WHEP player or browser would: recvonly video, no
    data channel; count the encoded frames received in 3 s; then hang up."""
    pc = RTCPeerConnection(IceSettings(host_addresses=("127.0.0.1",)).rtc_configuration())
    frames: list[Any] = []
    transceiver = pc.addTransceiver("video", direction="recvonly")
    if video_codecs is not None:
        capabilities = RTCRtpReceiver.getCapabilities("video").codecs
        transceiver.setCodecPreferences([c for c in capabilities if c.mimeType in video_codecs])
    got_track: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    @pc.on("track")
    def on_track(track: Any) -> None:
        encoded_frames(track)
        got_track.set_result(track)

    with restrict_host_addresses(("127.0.0.1",)):
        signaling = await SignalingClient.connect(url, "/offer", 10)
        try:
            await pc.setLocalDescription(await pc.createOffer())
            assert "m=application" not in pc.localDescription.sdp
            body = SessionDescription(type="offer", sdp=pc.localDescription.sdp).to_json()
            await signaling.send_offer("whep-like", target, body)
            async for envelope in signaling.requests():
                await signaling.acknowledge(envelope.command)
                if envelope.command is Command.ANSWER:
                    answer = decode_description(envelope.request.body, Command.ANSWER, "answer")
                    await pc.setRemoteDescription(
                        RTCSessionDescription(sdp=answer.sdp, type="answer")
                    )
                    break
            track = await asyncio.wait_for(got_track, 10)

            async def count() -> None:
                while True:
                    frames.append(await track.recv())

            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(count(), 3)
        finally:
            await pc.close()
            await signaling.close()
    return frames


def test_caller_without_data_channel_gets_the_video(tmp_path: Path, clips: dict[str, Path]) -> None:
    """An offer with only a recvonly video m-line (what WHEP players and
    browsers send) is answered with H.264 and the video flows; when the caller
    hangs up, the camera forgets the viewer and goes on serving."""
    with server() as url:
        cam = camera(tmp_path, url, "--video", str(clips["ts"]))
        try:
            frames = run(_media_only_call(url, "cam"), timeout=30)
            wait_until(lambda: stats(cam)["total"]["viewers"] == 0, "the viewer to be gone", 30)
            assert cam.proc.poll() is None, cam.stderr()
        finally:
            stop_camera(cam)
    assert len(frames) >= 30
    assert frames[0].mime == "video/H264"
    # what it gets starts at a keyframe, with the parameter sets in front
    first = [h264.nal_type(u) for u in h264.split_annexb(frames[0].data)]
    assert {h264.NAL_SPS, h264.NAL_PPS, h264.NAL_IDR} <= set(first), first


def test_caller_that_cannot_take_h264_is_refused_clearly(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    """A VP8-only viewer of an H.264 passthrough gets no answer; the camera
    says why (use --transcode) and serves the next caller."""
    with server() as url:
        cam = camera(tmp_path, url, "--video", str(clips["ts"]))
        try:

            async def refused() -> None:
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(_media_only_call(url, "cam", ["video/VP8"]), 4)

            run(refused(), timeout=20)
            frames = run(_media_only_call(url, "cam"), timeout=30)
        finally:
            stop_camera(cam)
    assert "cannot receive video/H264" in cam.stderr() and "--transcode" in cam.stderr()
    assert len(frames) >= 30


@pytest.mark.parametrize(("audio_codec", "mode"), [("libopus", "passthrough"), ("aac", "frames")])
def test_video_and_audio_of_one_file_are_recorded_to_mkv(
    tmp_path: Path, audio_codec: str, mode: str
) -> None:
    """--video and --audio from the same file share one demuxer; Opus audio is
    passed through, AAC is decoded once and encoded to Opus per viewer; the
    viewer's MKV has both streams, and both decode."""
    clip = make_clip(tmp_path / "av.mkv", audio=audio_codec)
    with server() as url:
        cam = camera(tmp_path, url, "--video", str(clip), "--audio", str(clip), "--stats", "1")
        try:
            rec = viewer(tmp_path, url, "v", "--record", str(tmp_path / "v.mkv"), "--duration", "4")
            snapshot = streaming(cam, 1)
            finish(rec)
        finally:
            stop_camera(cam)
    modes = {s["kind"]: (s["mode"], s["output"]) for s in snapshot["sources"]}
    assert modes["video"] == ("passthrough", "video/H264")
    assert modes["audio"][0] == mode
    assert re.search(r"stats: 1 viewer\(s\), \d+ kbit/s", cam.stderr()), cam.stderr()
    with av.open(str(tmp_path / "v.mkv")) as container:
        kinds = sorted(s.type for s in container.streams)
        decoded = {"video": 0, "audio": 0}
        for frame in container.decode(*container.streams):
            decoded["video" if isinstance(frame, av.VideoFrame) else "audio"] += 1
    assert kinds == ["audio", "video"]
    assert decoded["video"] >= 30 and decoded["audio"] >= 50, decoded


def test_whep_player_watches_a_camera_peer_and_deletes_the_session(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    """POST /whep/cam on `rtc-signal serve` reaches `rtc-peer answer --video`
    (H.264 passed through); the player decodes frames; DELETE ends it (200, then 404)."""
    from tests.httpclient import http_request
    from tests.test_whep import watch

    with server() as url:
        cam = camera(tmp_path, url, "--video", str(clips["ts"]))
        try:

            async def main() -> None:
                response, width = await watch(url, "cam")
                assert width == 640
                assert "H264" in response.body.decode()
                location = response.headers["location"]
                assert (await http_request(url, "DELETE", location)).status == 200
                assert (await http_request(url, "DELETE", location)).status == 404

            run(main(), timeout=60)
        finally:
            stop_camera(cam)


def test_media_options_are_checked_before_anything_starts(tmp_path: Path) -> None:
    """Bad SOURCEs and media-only flags without a source are usage errors (exit 2)."""
    cases = [
        (["answer", "--id", "x", "--stats-port", "0"], "--stats-port needs --video or --audio"),
        (["answer", "--id", "x", "--transcode"], "--transcode needs --video or --audio"),
        (["answer", "--id", "x", "--video", str(tmp_path / "none.ts")], "no such file"),
        (["answer", "--id", "x", "--video", "http://127.0.0.1/x"], "unsupported URL"),
        (["offer", "--target", "x", "--record", "a.mp4", "--count", "2"], "no data workload"),
    ]
    for args, message in cases:
        result = run_peer(*args, timeout=20)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)


def control_plain_peer(tmp_path: Path, *commands: str) -> tuple[list[Any], FilePeer, bool]:
    """`rtc-peer offer --control CMD...` against a plain `rtc-peer answer --id
    plain` (no media): the replies (one JSON object each), the answer peer
    (stopped), and whether it was still running after the commands."""
    with server() as url:
        plain = start_file_peer(
            "answer",
            "--id",
            "plain",
            "--signal",
            url,
            *LOOPBACK,
            stdin=subprocess.DEVNULL,
            directory=tmp_path,
            name="plain",
        )
        wait_file_registered(plain)
        try:
            controls = [arg for command in commands for arg in ("--control", command)]
            ctl = viewer(tmp_path, url, "ctl", *controls, target="plain")
            finish(ctl)
            alive = plain.proc.poll() is None
        finally:
            stop_camera(plain)
    return [json.loads(line) for line in ctl.stdout().decode().splitlines()], plain, alive


def test_control_commands_work_with_an_answer_peer_without_media(tmp_path: Path) -> None:
    """`offer --control ping` against a plain `rtc-peer answer` (no --video):
    ping and stats are answered, pause says there is no video."""
    (ping, stat, pause), _, _ = control_plain_peer(tmp_path, "ping", "stats", "pause")
    assert ping["ok"] and stat["ok"] and stat["result"]["total"]["viewers"] == 0
    assert not pause["ok"] and "receives no video" in pause["error"]


def test_audio_only_camera_records_to_mkv_and_mp4(tmp_path: Path) -> None:
    """--audio testsrc alone: MKV and MP4 recordings both hold the Opus
    audio (MP4's dOps box filled in), and nothing else."""
    with server() as url:
        cam = camera(tmp_path, url, "--audio", "testsrc")
        try:
            for suffix in ("mkv", "mp4"):
                path = tmp_path / f"a.{suffix}"
                finish(viewer(tmp_path, url, suffix, "--record", str(path), "--duration", "3"))
        finally:
            stop_camera(cam)
    for suffix in ("mkv", "mp4"):
        with av.open(str(tmp_path / f"a.{suffix}")) as container:
            assert [s.type for s in container.streams] == ["audio"], suffix
            assert sum(1 for _ in container.decode(audio=0)) >= 50, suffix
