"""The tests' shared code: ports, waiting, and the real processes the tests start.

Every test module imports what it needs from here (``from tests.harness import start_server``) or
from a submodule (``tests.harness.http``, ``.metrics``, ``.prometheus``, ``.haproxy``, ``.wrk``);
the conftest.py files only turn these into fixtures. No test directory is a package, so a conftest.py cannot be
imported by name (each is a top-level module called ``conftest``): shared code lives here instead.

Every process started here is stopped by its PID with :func:`warp.device.launch.stop_process`
(SIGTERM, then SIGKILL after a bound), by the fixture or the ``finally`` of the test that started it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.server import free_port as free_port  # re-exported: the one copy, shared with bench and grafana
from warp.device.launch import stop_process

REPO = Path(__file__).resolve().parents[2]
IN_CI = bool(os.environ.get("CI"))
POLL_INTERVAL = 0.05
"""How often :func:`wait_until` asks: short against the 0.1-1 s the awaited changes take."""


def require_tool(name: str) -> str:
    """Path of a system binary; a missing one skips locally and fails in CI (CI must not skip)."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (CI installs it in .ci/run)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def wait_until(predicate: Callable[[], object], timeout: float, what: str, log: Path | None = None) -> None:
    """Return as soon as ``predicate()`` is true; past ``timeout`` seconds, fail the test naming ``what``.

    The predicate is asked at least once, every :data:`POLL_INTERVAL`, and once more at the deadline.
    An ``OSError`` (a port not listening yet, a file not written yet) counts as "not yet"; any other
    exception — an ``assert`` that the awaited process is still alive — ends the wait at once.
    The failure is an ``AssertionError`` carrying the tail of ``log``, to show why.
    """
    deadline = time.monotonic() + timeout
    while True:
        last = time.monotonic() >= deadline
        try:
            if predicate():
                return
        except OSError:
            pass
        if last:
            break
        time.sleep(POLL_INTERVAL)
    tail = "" if log is None else "\n" + log.read_text(errors="replace")[-3000:]
    raise AssertionError(f"timed out after {timeout} s waiting for {what}{tail}")


def process_stopped(pid: int) -> bool:
    """Whether every thread of ``pid`` is stopped (state T in /proc), as after ``kill -STOP``."""
    tasks = Path(f"/proc/{pid}/task")
    return all((task / "stat").read_text().rsplit(")", 1)[1].split()[0] == "T" for task in tasks.iterdir())


@dataclass
class DeviceProc:
    """A standalone ``python -m warp.device`` under ``root``."""

    root: Path
    proc: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid


def start_device(root: Path, *extra: str) -> DeviceProc:
    """Starts a device and returns once it printed READY (its char device listens). One engine
    unless ``extra`` says otherwise: the fidelity tests reason about one engine's order and timing
    (the device's own default is the service's, two)."""
    engines = () if "--engines" in extra else ("--engines", "1")
    proc = subprocess.Popen([sys.executable, "-m", "warp.device", "--root", str(root), *engines, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=REPO)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks until READY, or returns b"" if the device exits first
    if not line.startswith(b"READY"):
        stop_process(proc)
        raise RuntimeError(f"device did not start: {line!r}")
    return DeviceProc(root, proc)


def device_cli(root: Path, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """``python -m warp.device <argv> --root ROOT`` (inject / reset), as a user types it."""
    command, *rest = argv
    return subprocess.run([sys.executable, "-m", "warp.device", command, "--root", str(root), *rest],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


@dataclass
class ServerProc:
    """A ``warpzip serve`` on a loopback port, its runtime root and its log."""

    url: str
    port: int
    root: Path
    proc: subprocess.Popen[bytes]
    log: Path


def start_server(root: Path, log: Path, *extra: str, timeout: float = 30.0) -> ServerProc:
    """``warpzip serve`` with ``extra`` flags on a free port; returns once /healthz answers 200.
    Dictionaries go beside ``log`` unless ``extra`` names a ``--data-dir``: never the user's own."""
    port = free_port()
    data = () if "--data-dir" in extra else ("--data-dir", str(log.with_name(log.name + ".data")))
    with log.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port", str(port),
                                 "--root", str(root), *data, *extra],
                                stdout=sink, stderr=subprocess.STDOUT, cwd=REPO)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert proc.poll() is None, f"server exited with {proc.returncode}: {log.read_text()[-2000:]}"
        with urllib.request.urlopen(url + "/healthz", timeout=1) as response:
            return bool(response.status == 200)

    try:
        wait_until(healthy, timeout, "the server to become healthy", log)
    except BaseException:
        stop_process(proc)
        raise
    return ServerProc(url, port, root, proc, log)
