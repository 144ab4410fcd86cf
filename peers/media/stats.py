"""Sending stats: per viewer and in total, from aiortc getStats() deltas.

:class:`StatsBook` is pure bookkeeping (fed with RTCStatsReports and a
clock); :func:`serve_stats` is a tiny asyncio HTTP server answering
``GET /stats`` with the JSON snapshot, like seed 003's route.

``process.video_encoders_open`` counts the video encoder contexts alive in
this process, found by walking the garbage collector's objects, whoever
opened them (our encode-once encoder, or aiortc's per-viewer encoders with
--transcode): with passthrough it stays 0, which is how the tests check that
nothing is re-encoded.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import av

log = logging.getLogger(__name__)


@dataclass
class _Sample:
    at: float
    bytes_sent: int
    packets_sent: int


@dataclass
class ViewerFigures:
    kbps: float = 0.0
    packets_per_s: float = 0.0
    bytes_sent: int = 0
    packets_sent: int = 0
    packets_lost: int = 0
    rtt_ms: float | None = None


class StatsBook:
    """Per-viewer figures from successive getStats() reports."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._last: dict[str, _Sample] = {}
        self._figures: dict[str, ViewerFigures] = {}
        self._extra: dict[str, dict[str, Any]] = {}

    def add(self, viewer: str) -> None:
        self._figures[viewer] = ViewerFigures()
        self._extra[viewer] = {}
        self._last.pop(viewer, None)

    def remove(self, viewer: str) -> None:
        self._figures.pop(viewer, None)
        self._extra.pop(viewer, None)
        self._last.pop(viewer, None)

    def update(self, viewer: str, reports: Iterable[Any], extra: dict[str, Any]) -> None:
        """Fold one sample in: ``reports`` are the viewer's senders' reports."""
        if viewer not in self._figures:
            return
        sent_bytes = sent_packets = lost = 0
        rtts: list[float] = []
        for report in reports:
            for stat in report.values():
                if stat.type == "outbound-rtp":
                    sent_bytes += stat.bytesSent
                    sent_packets += stat.packetsSent
                elif stat.type == "remote-inbound-rtp":
                    lost += max(0, stat.packetsLost)
                    if stat.roundTripTime is not None:
                        rtts.append(stat.roundTripTime)
        now = self.clock()
        figures = self._figures[viewer]
        last = self._last.get(viewer)
        if last is not None and now > last.at:
            elapsed = now - last.at
            figures.kbps = max(0, sent_bytes - last.bytes_sent) * 8 / 1000 / elapsed
            figures.packets_per_s = max(0, sent_packets - last.packets_sent) / elapsed
        figures.bytes_sent, figures.packets_sent, figures.packets_lost = (
            sent_bytes,
            sent_packets,
            lost,
        )
        figures.rtt_ms = max(rtts) * 1000 if rtts else figures.rtt_ms
        self._last[viewer] = _Sample(now, sent_bytes, sent_packets)
        self._extra[viewer] = extra

    def viewer(self, viewer: str) -> dict[str, Any] | None:
        figures = self._figures.get(viewer)
        if figures is None:
            return None
        return {
            "kbps": round(figures.kbps, 1),
            "packets_per_s": round(figures.packets_per_s, 1),
            "packets_sent": figures.packets_sent,
            "bytes_sent": figures.bytes_sent,
            "packets_lost": figures.packets_lost,
            "rtt_ms": None if figures.rtt_ms is None else round(figures.rtt_ms, 2),
            **self._extra.get(viewer, {}),
        }

    def total(self) -> dict[str, Any]:
        figures = list(self._figures.values())
        rtts = [f.rtt_ms for f in figures if f.rtt_ms is not None]
        return {
            "viewers": len(figures),
            "kbps": round(sum(f.kbps for f in figures), 1),
            "packets_per_s": round(sum(f.packets_per_s for f in figures), 1),
            "packets_sent": sum(f.packets_sent for f in figures),
            "packets_lost": sum(f.packets_lost for f in figures),
            "rtt_ms_avg": round(sum(rtts) / len(rtts), 2) if rtts else None,
            "rtt_ms_max": round(max(rtts), 2) if rtts else None,
        }

    def snapshot(self) -> dict[str, Any]:
        return {
            "viewers": {viewer: self.viewer(viewer) for viewer in self._figures},
            "total": self.total(),
        }


def video_encoders_open() -> int:
    """Video encoder contexts alive in this process (whoever made them)."""
    return sum(
        1
        for obj in gc.get_objects()
        if isinstance(obj, av.CodecContext) and obj.is_encoder and obj.type == "video"
    )


def process_stats() -> dict[str, Any]:
    times = os.times()
    return {
        "pid": os.getpid(),
        "cpu_seconds": round(times.user + times.system, 3),
        "video_encoders_open": video_encoders_open(),
    }


def format_line(snapshot: dict[str, Any]) -> str:
    """One human line for --stats."""
    total = snapshot["total"]
    rtt = total["rtt_ms_max"]
    head = (
        f"stats: {total['viewers']} viewer(s), {total['kbps']:.0f} kbit/s, "
        f"{total['packets_per_s']:.0f} packets/s, {total['packets_lost']} lost"
        + (f", RTT <= {rtt:.1f} ms" if rtt is not None else "")
    )
    viewers = [
        f"{name}: {v['kbps']:.0f} kbit/s {v['packets_per_s']:.0f} p/s lost {v['packets_lost']}"
        + (" (paused)" if v.get("paused") else "")
        for name, v in snapshot["viewers"].items()
        if v is not None
    ]
    return head + (" | " + "; ".join(viewers) if viewers else "")


async def serve_stats(
    snapshot: Callable[[], dict[str, Any]], host: str, port: int
) -> asyncio.Server:
    """Serve ``GET /stats`` (JSON) on host:port; other requests get 404/405."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            method, _, rest = head.decode("latin-1").partition(" ")
            path = rest.split(" ", 1)[0].split("?", 1)[0]
            if path != "/stats":
                status, body = "404 Not Found", {"error": f"no such path {path!r}; try /stats"}
            elif method not in ("GET", "HEAD"):
                status, body = "405 Method Not Allowed", {"error": "use GET /stats"}
            else:
                status, body = "200 OK", snapshot()
            data = json.dumps(body).encode()
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
                + (data if method != "HEAD" else b"")
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            log.debug("bad stats request: %r", exc)
        except ConnectionError:
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)
