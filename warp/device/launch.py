"""Starting and stopping a device process: the one launcher the service, the tools and the tests use.

``python -m warp.device --root ROOT ... --parent-pipe FD``: the device prints ``READY`` once its
char device listens. It is tied to its parent twice over — it exits when the parent pipe closes
and asks the kernel for SIGTERM on parent death — so even a parent killed with SIGKILL leaves no
device behind; a normal stop closes the pipe, then SIGTERM to its PID, then SIGKILL after a bound.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Final, final

import warp

READY_TIMEOUT: Final = 20.0
STOP_TIMEOUT: Final = 10.0


class DeviceStartError(RuntimeError):
    """The device process exited or stayed silent instead of printing READY."""


def wait_until(what: str, check: Callable[[], object], timeout: float, log: Path | None = None) -> None:
    """Poll ``check`` until it is true — an ``OSError`` (a port not listening yet) counts as "not
    yet" — for the processes the tools and tests start (device, server, Prometheus, HAProxy).
    Past ``timeout``, ``TimeoutError`` names ``what`` with the tail of ``log`` to show why."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.2)
    tail = "" if log is None else "\n" + log.read_text(errors="replace")[-3000:]
    raise TimeoutError(f"timed out waiting for {what}{tail}")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> int:
    """SIGTERM by PID, wait, SIGKILL if it hangs; returns the exit status. Idempotent."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    return proc.returncode


@final
class DeviceProcess:
    """``with DeviceProcess(root, "--engines", "2") as dev:`` — a device under ``root``."""

    def __init__(self, root: Path, *args: str, log: Path | None = None, timeout: float = READY_TIMEOUT) -> None:
        self.root = root
        self.args = args
        self.log_path = log
        self.timeout = timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._pipe_w: int | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> DeviceProcess:
        pipe_r, self._pipe_w = os.pipe()
        self._log = self.log_path.open("wb") if self.log_path is not None else None
        env = dict(os.environ)
        source = str(Path(warp.__file__).resolve().parent.parent)  # run the same warp as this process
        env["PYTHONPATH"] = source + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "warp.device", "--root", str(self.root), *self.args,
                 "--parent-pipe", str(pipe_r)],
                stdout=subprocess.PIPE, stderr=self._log, stdin=subprocess.DEVNULL, pass_fds=(pipe_r,), env=env)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        finally:
            os.close(pipe_r)
        return self

    def _wait_ready(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + self.timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DeviceStartError(f"device printed no READY within {self.timeout:.0f} s{self._log_tail()}")
                if sel.select(remaining):
                    line = self.proc.stdout.readline()
                    if line.startswith(b"READY"):
                        return
                    if not line:
                        self.proc.wait(STOP_TIMEOUT)
                        raise DeviceStartError(f"device exited with status {self.proc.returncode} before READY"
                                               f"{self._log_tail()}")

    def _log_tail(self) -> str:
        if self.log_path is None:
            return ""
        try:
            tail = self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return ""
        return f":\n{tail}" if tail else ""

    def stop(self) -> int | None:
        """Close the parent pipe (the device's cue to stop), then stop it by PID. Idempotent."""
        if self._pipe_w is not None:
            os.close(self._pipe_w)
            self._pipe_w = None
        status = None
        if self.proc is not None:
            status = stop_process(self.proc)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        return status

    def __enter__(self) -> DeviceProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
