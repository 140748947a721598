"""Keeps the service's processes running: the embedded device and the forked HTTP workers.

A device that exits (crash, SIGKILL, OOM) is started again under the same root, with a backoff
that doubles up to ``MAX_BACKOFF`` while restarts keep failing. Meanwhile the workers run on the
cpu driver; each worker's runtime probes for the device once a second and moves back to it
(``warp.runtime.Runtime.driver``), so no request waits for the restart.

A worker of ``--workers N`` that exits while the service is not stopping (crash, SIGKILL, the OOM
killer) is replaced by a freshly forked one — its own address space, PASID and queues — at once
if it had run for ``STABLE_AFTER`` seconds, else after the same doubling backoff, so a worker
that keeps crashing does not become a fork loop. Meanwhile the others keep serving the port
(only live workers accept from the shared listening socket); only the requests in flight on the
dead worker are lost, as their connections are. A worker that could not start serving at all
(exit status ``BOOT_FAILED``: its heap cannot be mapped) stops the service instead, as gunicorn's
arbiter does: another fork would fail the same way. A port in use stops ``serve`` before any
worker starts (``app.server.listen``).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final, final

from app.snapshot_files import Restarts
from warp.device.launch import DeviceProcess, DeviceStartError

log = logging.getLogger("warpzip")
CHECK_INTERVAL: Final = 0.2
MAX_BACKOFF: Final = 30.0
STABLE_AFTER: Final = 10.0
BOOT_FAILED: Final = 3
"""A worker's exit status when it could not start serving."""
PR_SET_PDEATHSIG: Final = 1


@final
class DeviceSupervisor:
    def __init__(self, root: Path, *args: str, restarts: Restarts | None = None) -> None:
        self.root = root
        self.args = args
        self.restarts = 0
        self._counts = restarts
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
            if self._counts is not None:
                self._counts.count("device")
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


@final
class WorkerPool:
    """``count`` forked workers running ``target``, each replaced when it exits, until SIGTERM/SIGINT.

    The parent polls its workers' PIDs (never ``waitpid(-1)``, which would reap the device process
    from under its ``Popen``) and forwards the stopping signal to them.
    """

    def __init__(self, count: int, target: Callable[[], int], on_stop: Callable[[], None] = lambda: None,
                 restarts: Restarts | None = None) -> None:
        self.count = count
        self.target = target
        self._on_stop = on_stop
        self.restarts = 0
        self._counts = restarts
        self._workers: dict[int, float] = {}  # pid -> start time (monotonic)
        self._due: list[float] = []  # when each pending replacement may start
        self._backoff = 1.0
        self._stopping = False

    def run(self) -> int:
        """Serve until a signal stops the workers; the first non-zero exit status among them, else 0."""
        signal.signal(signal.SIGTERM, self._forward)
        signal.signal(signal.SIGINT, self._forward)
        for _ in range(self.count):
            self._start()
        status = 0
        while self._workers or (self._due and not self._stopping):
            time.sleep(CHECK_INTERVAL)
            for pid, started in list(self._workers.items()):
                reaped, wait_status = os.waitpid(pid, os.WNOHANG)
                if reaped:
                    del self._workers[pid]
                    code = os.waitstatus_to_exitcode(wait_status)
                    if self._stopping:
                        status = status or code
                    elif code == BOOT_FAILED:
                        log.error("worker %d could not start serving; stopping the service", pid)
                        status = code
                        self._forward(signal.SIGTERM, None)
                    else:
                        self._schedule(pid, code, time.monotonic() - started)
            now = time.monotonic()
            while self._due and self._due[0] <= now and not self._stopping:
                self._due.pop(0)
                self._start()
                self.restarts += 1
                if self._counts is not None:
                    self._counts.count("worker")
        return status

    def _start(self) -> None:
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the parent's forwarding handler
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
            code = 1
            try:
                code = self.target()
            except BaseException:
                log.exception("worker %d failed", os.getpid())
            finally:
                os._exit(code)
        self._workers[pid] = time.monotonic()
        if self._stopping:  # the signal came while forking: this one must hear it too
            os.kill(pid, signal.SIGTERM)

    def _schedule(self, pid: int, code: int, uptime: float) -> None:
        if uptime >= STABLE_AFTER:
            self._backoff = 1.0
            delay = 0.0
        else:
            delay = self._backoff
            self._backoff = min(self._backoff * 2, MAX_BACKOFF)
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
        log.warning("worker %d %s after %.0f s; starting a replacement in %.0f s (%d still serving)",
                    pid, how, uptime, delay, len(self._workers))
        self._due.append(time.monotonic() + delay)

    def _forward(self, signum: int, _frame: object) -> None:
        if not self._stopping:
            self._on_stop()
        self._stopping = True
        for pid in self._workers:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass
