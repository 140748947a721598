"""Starting, checking and stopping one server under test.

Each server runs as a subprocess on its own free loopback port in its own session, so that it can
be measured alone and nothing it forks outlives it.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import zstandard

from bench import proctree
from bench.peers.echo import echo_answer
from bench.report import Role

REPO_ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
READY_TIMEOUT_S = 20.0
"""warpzip starts a device process before it listens; the peers take well under a second."""
STOP_TIMEOUT_S = 10.0
"""Graceful shutdown finishes in-flight requests; a server slower than this is SIGKILLed."""


def _status_problem(status: int, answer: bytes) -> str | None:
    return None if status == 200 else f"HTTP {status}: {answer[:200]!r}"


def check_answer(status: int, answer: bytes, body: bytes) -> str | None:
    """Why a response to ``body`` is wrong, or ``None`` if it is one zstd frame of exactly ``body``."""
    problem = _status_problem(status, answer)
    if problem is not None:
        return problem
    try:
        decompressor = zstandard.ZstdDecompressor().decompressobj()
        restored = decompressor.decompress(answer)
    except zstandard.ZstdError as error:
        return f"not a zstd frame: {error}"
    if decompressor.unused_data:
        return f"{len(decompressor.unused_data)} bytes after the first zstd frame"
    if restored != body:
        return f"decompresses to {len(restored)} bytes that differ from the {len(body)}-byte body"
    return None


def check_echo(status: int, answer: bytes, body: bytes) -> str | None:
    """Why an echo floor's response to ``body`` is wrong, or ``None`` if it is the body's first third:
    an echo that answered less (or nothing) would make the floor look cheaper than it is."""
    problem = _status_problem(status, answer)
    if problem is None and answer != echo_answer(body):
        return f"{len(answer)} bytes that are not the first third ({len(body) // 3} bytes) of the body"
    return problem


Check = Callable[[int, bytes, bytes], str | None]
"""(status, response body, request body) → why the response is wrong, or ``None``."""


@dataclass(frozen=True)
class ServerSpec:
    """A server the driver can run: its name in the report, how to start it, and how to tell a
    right answer from a wrong one."""

    name: str
    argv: Callable[[int, Path], list[str]]
    """(port, scratch directory) → command line."""
    role: Role
    """Peers set the throughput bar, the echo floor the CPU floor; warpzip is held against both."""
    check: Check = check_answer


def _python_module(module: str, *extra: str) -> Callable[[int, Path], list[str]]:
    return lambda port, _scratch: [sys.executable, "-m", module, "--host", HOST, "--port", str(port), *extra]


def _warpzip(*extra: str) -> Callable[[int, Path], list[str]]:
    """warpzip with its embedded device and its default flags (access log included): the defaults
    are what users get, so they are what is measured. ``--root`` only keeps runs apart."""
    return lambda port, scratch: [sys.executable, "-m", "app", "serve", "--host", HOST, "--port", str(port),
                                  "--root", str(scratch / "root"), *extra]


SERVERS: dict[str, ServerSpec] = {
    "warpzip": ServerSpec("warpzip", _warpzip(), Role.WARPZIP),
    "warpzip-2w": ServerSpec("warpzip-2w", _warpzip("--workers", "2"), Role.WARPZIP),
    "warpzip-1e": ServerSpec("warpzip-1e", _warpzip("--engines", "1", "--queues", "1"), Role.WARPZIP),
    "inline": ServerSpec("inline", _python_module("bench.peers.inline"), Role.PEER),
    "inline-2proc": ServerSpec("inline-2proc", _python_module("bench.peers.inline", "--processes", "2"), Role.PEER),
    "executor": ServerSpec("executor", _python_module("bench.peers.executor"), Role.PEER),
    "echo": ServerSpec("echo", _python_module("bench.peers.echo"), Role.FLOOR, check_echo),
    "echo-2proc": ServerSpec("echo-2proc", _python_module("bench.peers.echo", "--processes", "2"), Role.FLOOR,
                             check_echo),
}
"""Name → spec, in the order the report lists them."""

DEFAULT_SERVERS = ("warpzip", "inline", "inline-2proc", "executor", "echo")
"""What ``make bench`` runs: warpzip's defaults, every peer, and the echo floor (one process, like
the peers it is compared with). The other warpzip configurations and ``echo-2proc`` are on demand."""


class ServerFailed(Exception):
    """The server did not start, died, or answered wrongly; the message goes into the report."""


def free_port() -> int:
    """A loopback port nobody listens on now (another process could take it first; unlikely here)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def post(port: int, path: str, body: bytes, timeout_s: float = 30.0) -> tuple[int, bytes]:
    """One POST with the headers wrk sends; returns (status, response body)."""
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout_s)
    try:
        connection.request("POST", path, body=body, headers={"Content-Type": "application/octet-stream"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _spawn(argv: list[str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    """Starts a server in a new session (so its whole group can be signalled), output to ``log``."""
    try:
        return subprocess.Popen(
            argv, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    except OSError as error:
        raise ServerFailed(f"cannot start {argv[0]}: {error}") from None


class RunningServer:
    """A started server: its process, port and log. Use as a context manager: leaving it stops the
    server and kills whatever it left behind."""

    def __init__(self, spec: ServerSpec, scratch: Path) -> None:
        self.spec = spec
        self.port = free_port()
        self._log_path = scratch / f"{spec.name}.log"
        server_root = scratch / f"{spec.name}-root"
        server_root.mkdir(exist_ok=True)
        with self._log_path.open("wb") as log:
            self.process = _spawn(spec.argv(self.port, server_root), log)
        self._known: set[proctree.ProcessKey] = set()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 5) -> str:
        text = self._log_path.read_text(errors="replace").strip().splitlines()
        return " / ".join(text[-lines:])

    def remember(self, keys: set[proctree.ProcessKey]) -> None:
        """Adds processes seen in the tree, so :meth:`stop` kills them even if they re-parented."""
        self._known |= keys

    def url(self, level: int) -> str:
        return f"http://{HOST}:{self.port}/compress?level={level}"

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Polls until the server answers any HTTP request; ``ServerFailed`` if it exits or times out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.ensure_alive()
            try:
                post(self.port, "/compress", b"", timeout_s=1.0)
            except OSError:
                time.sleep(0.05)
                continue
            self.remember({stat.key for stat in proctree.snapshot_tree(self.process.pid)})
            return
        raise ServerFailed(f"not answering after {timeout_s:.0f} s: {self.log_tail()}")

    def ensure_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise ServerFailed(f"exited with code {code}: {self.log_tail()}")

    def verify(self, level: int, bodies: Sequence[bytes]) -> None:
        """Sends every body once and checks each answer with the server's own check (a zstd frame
        of the body, or the echo's third of it): a fast wrong answer must not make it into the table."""
        for body in bodies:
            try:
                status, answer = post(self.port, f"/compress?level={level}", body)
            except OSError as error:
                raise ServerFailed(f"request failed: {error!r}") from None
            problem = self.spec.check(status, answer, body)
            if problem is not None:
                raise ServerFailed(f"wrong answer for a {len(body)}-byte body: {problem}")

    def stop(self) -> None:
        """SIGTERM to the server's PID (it stops its own workers), SIGKILL to its session after the
        timeout or once it is gone, then SIGKILL to any process ever seen in its tree.

        The leader is reaped only at the end: until then its PID, and so its session's ID, cannot be
        reused by an unrelated process that a signal would hit instead.
        """
        if self.process.poll() is None:
            self.remember({stat.key for stat in proctree.snapshot_tree(self.process.pid)})
            self.process.send_signal(signal.SIGTERM)
            _wait_unreaped(self.process.pid, STOP_TIMEOUT_S)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)  # stragglers, or the leader if it hung
            self.process.wait()
        left = proctree.kill_tree(self._known)
        if left:  # a harness fault, not the server's: later rows would be measured on a busy machine
            raise RuntimeError(f"processes {sorted(pid for pid, _ in left)} survived SIGKILL")


def _wait_unreaped(pid: int, timeout_s: float) -> None:
    """Waits until child ``pid`` has exited or the timeout passed, without reaping it."""
    deadline = time.monotonic() + timeout_s
    while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        if time.monotonic() >= deadline:
            return
        time.sleep(0.02)
