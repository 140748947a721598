"""The progress display of ``warpzip bench device`` on stderr: where the run is and its throughput so far."""

from __future__ import annotations

import time
from typing import IO, Final, final

from warp.tool.bench.measurement import Measurement
from warp.tool.units import MB

TTY_INTERVAL: Final = 0.2
LINE_INTERVAL: Final = 1.0


def format_progress(label: str, elapsed_s: float, total_s: float, jobs: int, bytes_in: int) -> str:
    """One progress line: where the run is and its throughput so far."""
    rate = bytes_in / elapsed_s / MB if elapsed_s > 0 else 0.0
    jobs_s = jobs / elapsed_s if elapsed_s > 0 else 0.0
    done = min(elapsed_s, total_s)
    return f"[{label}] {done:4.1f}/{total_s:.1f} s  {jobs} jobs  {jobs_s:.0f} jobs/s  {rate:.1f} MB/s"


def rate_limited(now_s: float, last_s: float, interval_s: float) -> bool:
    """Whether a progress update is due."""
    return now_s - last_s >= interval_s


@final
class Progress:
    """A single updating stderr line on a TTY, a plain line a second otherwise, or nothing."""

    def __init__(self, stream: IO[str] | None) -> None:
        self.stream = stream
        self.tty = bool(stream is not None and stream.isatty())
        self.interval = TTY_INTERVAL if self.tty else LINE_INTERVAL
        self.label = ""
        self.total = 0.0
        self.started = self.last = 0.0
        self._width = 0

    def start(self, label: str, seconds: float) -> None:
        self.label, self.total = label, seconds
        self.started = self.last = time.monotonic()

    def update(self, jobs: int, bytes_in: int) -> None:
        if self.stream is None:
            return
        now = time.monotonic()
        if not rate_limited(now, self.last, self.interval):
            return
        self.last = now
        self._emit(format_progress(self.label, now - self.started, self.total, jobs, bytes_in))

    def _emit(self, line: str) -> None:
        assert self.stream is not None
        if self.tty:
            self.stream.write("\r" + line.ljust(self._width))
            self._width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self, m: Measurement) -> None:
        if self.stream is None:
            return
        line = format_progress(self.label, m.seconds, self.total, m.jobs, m.bytes_in) + "  done"
        if self.tty:
            self.stream.write("\r" + line.ljust(self._width) + "\n")
            self._width = 0
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def note(self, text: str) -> None:
        if self.stream is not None:
            self.stream.write(text + "\n")
            self.stream.flush()
