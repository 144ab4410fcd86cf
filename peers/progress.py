"""The file-transfer progress bar: one redrawn line with rate and ETA on a
terminal, or one summary line per file (sizes and rates in IEC binary units:
KiB, MiB, MiB/s)."""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO

from rtc_signal.peers.transfer import MIB, FileHeader, FileStats, clock, human_size
from rtc_signal.peers.workloads import Output


class Progress:
    """A one-line progress bar with rate and ETA on a terminal, or (``bar`` off)
    one summary line per file through ``status``."""

    REFRESH = 0.1
    WARM_UP = 0.5

    def __init__(
        self, verb: str, header: FileHeader, bar: bool, status: Output, stream: TextIO | None = None
    ) -> None:
        self.verb = verb
        self.header = header
        self.bar = bar
        self.status = status
        self.stream = stream or sys.stderr
        self.started = time.monotonic()
        self.done = 0
        self._drawn_at = 0.0
        self._drawn = False

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.bar and now - self._drawn_at >= self.REFRESH:
            self._drawn_at = now
            self._draw(now)

    def finish(self) -> FileStats:
        self.done = self.header.size
        stats = FileStats(self.header.name, self.header.size, time.monotonic() - self.started)
        if self.bar:
            self._draw(time.monotonic(), final=stats)
            self.stream.write("\n")
            self.stream.flush()
        else:
            self.status(stats.summary(self.verb))
        return stats

    def abort(self) -> None:
        """End the bar's line, so that an error message starts on a fresh one."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self, now: float, final: FileStats | None = None) -> None:
        width = max(40, shutil.get_terminal_size((80, 24)).columns - 1)
        elapsed = max(now - self.started, 1e-9)
        total = self.header.size
        rate = self.done / elapsed
        if final is not None:
            tail = f"{human_size(total)} in {final.seconds:.1f} s, {final.mib_per_s:.1f} MiB/s"
        elif elapsed < self.WARM_UP or rate <= 0:
            # The first blocks only fill buffers: a rate from them would be nonsense.
            tail = f"{human_size(self.done)}/{human_size(total)} --.- MiB/s ETA --:--"
        else:
            eta = (total - self.done) / rate
            speed = f"{rate / MIB:.1f} MiB/s"
            tail = f"{human_size(self.done)}/{human_size(total)} {speed} ETA {clock(eta)}"
        fraction = 1.0 if total == 0 else min(1.0, self.done / total)
        head = f"{self.verb} {self.header.name}"
        fixed = len(tail) + 9  # "[", "] ", "100%", the spaces between parts
        cells = max(10, min(30, width - len(head) - fixed))
        room = width - fixed - cells
        if len(head) > room:  # a long name gives way, the numbers stay
            head = head[: max(room - 1, 0)] + "…"
        filled = round(fraction * cells)
        line = f"{head} [{'#' * filled}{'-' * (cells - filled)}] {fraction * 100:3.0f}% {tail}"
        self.stream.write("\r" + line.ljust(width)[:width])
        self.stream.flush()
        self._drawn = True
