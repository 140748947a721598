"""The embedded device: a ``warp.device`` child process owned by the service.

The child gets the read end of a pipe; the service keeps the write end and never writes. When
the service exits for any reason the pipe closes and the device stops — together with
PR_SET_PDEATHSIG in the child, no device outlives the process that started it.
"""

from __future__ import annotations

import logging
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import final

log = logging.getLogger("warpzip")


class DeviceStartError(RuntimeError):
    """The device process exited or stayed silent instead of reporting READY."""


@final
class EmbeddedDevice:
    def __init__(self, root: Path, engines: int, queues: int = 64) -> None:
        self.root = root
        self.engines = engines
        self.queues = queues
        self.process: subprocess.Popen[bytes] | None = None
        self._pipe_w: int | None = None

    def start(self, timeout: float = 15.0) -> None:
        read_end, self._pipe_w = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "warp.device", "--root", str(self.root), "--engines", str(self.engines),
                 "--queues", str(self.queues), "--parent-pipe", str(read_end)],
                pass_fds=(read_end,), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        finally:
            os.close(read_end)
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([self.process.stdout], [], [], max(remaining, 0))
            if not ready:
                self.stop()
                raise DeviceStartError(f"device did not report ready within {timeout} s")
            chunk = os.read(self.process.stdout.fileno(), 256)
            if not chunk:
                code = self.process.wait()
                self.stop()
                raise DeviceStartError(f"device exited with status {code} during start-up")
            line += chunk
        if not line.startswith(b"READY"):
            self.stop()
            raise DeviceStartError(f"device said {line!r} instead of READY")

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def stop(self, timeout: float = 10.0) -> None:
        """Close the pipe (the device's signal to stop), wait, and kill only if it hangs."""
        if self._pipe_w is not None:
            os.close(self._pipe_w)
            self._pipe_w = None
        if self.process is None:
            return
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("device %d did not stop in %.0f s; killing it", self.process.pid, timeout)
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None
