"""Keeps the embedded device running while the service serves.

A device that exits (crash, SIGKILL, OOM) is started again under the same root, with a backoff
that doubles up to ``MAX_BACKOFF`` while restarts keep failing. Meanwhile the workers run on the
cpu driver; each worker's runtime probes for the device once a second and moves back to it
(``warp.session.Runtime.driver``), so no request waits for the restart.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Final, final

from warp.device.launch import DeviceProcess, DeviceStartError

log = logging.getLogger("warpzip")
CHECK_INTERVAL: Final = 0.2
MAX_BACKOFF: Final = 30.0


@final
class DeviceSupervisor:
    def __init__(self, root: Path, *args: str) -> None:
        self.root = root
        self.args = args
        self.restarts = 0
        self._device: DeviceProcess | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="device-supervisor", daemon=True)

    def start(self) -> DeviceSupervisor:
        """Start the device (raises DeviceStartError if it cannot come up at all) and watch it."""
        self._device = DeviceProcess(self.root, *self.args).start()
        self._thread.start()
        return self

    @property
    def pid(self) -> int | None:
        return self._device.pid if self._device is not None else None

    def _watch(self) -> None:
        backoff = 1.0
        while not self._stop.wait(CHECK_INTERVAL):
            device = self._device
            if device is None or device.proc is None or device.proc.poll() is None:
                continue
            log.warning("device %d exited with status %s; restarting it in %.0f s",
                        device.proc.pid, device.proc.returncode, backoff)
            device.stop()
            if self._stop.wait(backoff):
                return
            try:
                self._device = DeviceProcess(self.root, *self.args).start()
            except DeviceStartError as exc:
                log.error("device restart failed: %s", exc)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            self.restarts += 1
            backoff = 1.0
            log.info("device restarted (pid %d, restart %d)", self._device.proc.pid if self._device.proc else -1,
                     self.restarts)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        if self._device is not None:
            self._device.stop()
            self._device = None
