"""Shared fixtures: real device processes, real servers on loopback ports, the Silesia corpus.

Every process a fixture starts is stopped by its PID at teardown (SIGTERM, then SIGKILL after a
bound), so the suite leaves nothing behind.
"""

from __future__ import annotations

import bz2
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from bench.corpus import CORPUS_DIR
from warp.device.launch import stop_process

REPO = Path(__file__).resolve().parent.parent
CORPUS = CORPUS_DIR
IN_CI = bool(os.environ.get("CI"))


THIS_MODULE = sys.modules[__name__]  # taken now: later conftest.py files reuse the name "conftest"


@pytest.fixture(scope="session")
def harness() -> ModuleType:
    """This module, for tests in directories that cannot ``import conftest`` (no test directory is
    a package, so every conftest.py is a top-level module named ``conftest``)."""
    return THIS_MODULE


def require_tool(name: str) -> str:
    """Path of a system binary; a missing one skips locally and fails in CI (CI must not skip)."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (CI installs it in .ci/run)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class DeviceProc:
    root: Path
    proc: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid


def start_device(root: Path, *extra: str, timeout: float = 15.0) -> DeviceProc:
    proc = subprocess.Popen([sys.executable, "-m", "warp.device", "--root", str(root), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=REPO)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    line = proc.stdout.readline()  # the device prints READY once the socket is listening
    if not line.startswith(b"READY") or time.monotonic() > deadline:
        stop_process(proc)
        raise RuntimeError(f"device did not start: {line!r}")
    return DeviceProc(root, proc)


def process_stopped(pid: int) -> bool:
    """Whether every thread of ``pid`` is stopped (state T in /proc), as after ``kill -STOP``."""
    tasks = Path(f"/proc/{pid}/task")
    return all((task / "stat").read_text().rsplit(")", 1)[1].split()[0] == "T" for task in tasks.iterdir())


def device_cli(root: Path, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """``python -m warp.device <argv> --root ROOT`` (inject / reset), as a user types it."""
    command, *rest = argv
    return subprocess.run([sys.executable, "-m", "warp.device", command, "--root", str(root), *rest],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


@pytest.fixture
def device(tmp_path: Path) -> Iterator[DeviceProc]:
    """A standalone device process under a fresh runtime root."""
    dev = start_device(tmp_path / "root")
    yield dev
    stop_process(dev.proc)


@dataclass
class ServerProc:
    url: str
    port: int
    root: Path
    proc: subprocess.Popen[bytes]
    log: Path


def start_server(root: Path, log: Path, *extra: str, timeout: float = 30.0) -> ServerProc:
    port = free_port()
    with log.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port", str(port),
                                 "--root", str(root), *extra],
                                stdout=sink, stderr=subprocess.STDOUT, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as response:
                if response.status == 200:
                    return ServerProc(url, port, root, proc, log)
        except OSError:
            time.sleep(0.1)
    stop_process(proc)
    raise RuntimeError(f"server did not become healthy: {log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    """``warpzip serve`` with its embedded device, on a free loopback port (shared by a module)."""
    base = tmp_path_factory.mktemp("server")
    srv = start_server(base / "root", base / "server.log", "--access-log", "0")
    yield srv
    stop_process(srv.proc)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The four Silesia files, decompressed at run time into a temp dir (never into the repo)."""
    out = tmp_path_factory.mktemp("corpus")
    files: dict[str, Path] = {}
    for packed in sorted(CORPUS.glob("*.bz2")):
        target = out / packed.stem
        with bz2.open(packed) as src, target.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        files[packed.stem] = target
    assert len(files) == 4, f"expected 4 corpus files in {CORPUS}"
    return files
