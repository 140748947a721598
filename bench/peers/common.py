"""What the peer servers share: CLI, level parsing, the aiohttp app, and process management.

The peers differ only in *where* zstd runs (in the handler, or in a thread pool), so everything else
lives here once; a difference between two peers' numbers is then a difference in that one choice.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import os
import signal
import sys
import threading
import traceback
from collections.abc import Awaitable, Callable, Sequence

import uvloop
import zstandard
from aiohttp import web

Compress = Callable[[bytes, int], Awaitable[bytes]]
"""Compresses a body at a level; the one thing a peer chooses (the echo floor skips the zstd)."""

BuildApp = Callable[[], web.Application]
"""Builds a peer's app inside its worker process (after fork, so thread pools are per process)."""

MIN_LEVEL = -7
MAX_LEVEL = zstandard.MAX_COMPRESSION_LEVEL
DEFAULT_LEVEL = 3
MAX_BODY = 64 * 1024 * 1024
"""aiohttp refuses bodies of 1 MiB and more by default; the benchmark sends exactly 1 MiB."""

LISTEN_BACKLOG = 1024
"""aiohttp's default of 128 drops SYNs when wrk opens 256 connections at once."""


def parse_level(raw: str | None) -> int:
    """Parses ``?level=`` with warpzip's rules (−7…22, default 3), so peers accept the same URLs."""
    if raw is None:
        return DEFAULT_LEVEL
    try:
        level = int(raw)
    except ValueError:
        raise ValueError(f"level must be an integer, got {raw!r}") from None
    if not MIN_LEVEL <= level <= MAX_LEVEL:
        raise ValueError(f"level must be in {MIN_LEVEL}..{MAX_LEVEL}, got {level}")
    return level


class Compressors:
    """One reusable ``ZstdCompressor`` per level *per thread*.

    Reusing a compressor keeps its zstd context (allocating one costs more than compressing 4 KiB),
    but a compressor must not be used by two threads at once, so the executor peer's threads each
    get their own.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def compress(self, body: bytes, level: int) -> bytes:
        """Compresses ``body`` into one frame (content size in the header, as warpzip does)."""
        by_level: dict[int, zstandard.ZstdCompressor] | None = getattr(self._local, "by_level", None)
        if by_level is None:
            by_level = self._local.by_level = {}
        compressor = by_level.get(level)
        if compressor is None:
            compressor = by_level[level] = zstandard.ZstdCompressor(level=level)
        return compressor.compress(body)


def create_app(compress: Compress, content_type: str = "application/zstd") -> web.Application:
    """The whole peer API: ``POST /compress?level=N`` → ``application/zstd``.

    The echo floor passes its own ``compress`` (a third of the body, no zstd) and content type, so
    that it pays for exactly the same HTTP path as the peers and nothing else.
    """

    async def handle_compress(request: web.Request) -> web.Response:
        try:
            level = parse_level(request.query.get("level"))
        except ValueError as error:
            raise web.HTTPBadRequest(text=str(error)) from None
        body = await request.read()
        return web.Response(body=await compress(body, level), content_type=content_type)

    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_post("/compress", handle_compress)
    return app


def parse_args(argv: Sequence[str], description: str) -> argparse.Namespace:
    """The CLI every peer takes, so the driver starts them all the same way."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="worker processes sharing the port with SO_REUSEPORT (default 1)",
    )
    args = parser.parse_args(argv)
    if args.processes < 1:
        parser.error("--processes must be at least 1")
    return args


async def serve(build: BuildApp, host: str, port: int, reuse_port: bool) -> None:
    """Serves until SIGTERM or SIGINT, then closes the listener and finishes in-flight requests."""
    runner = web.AppRunner(build(), access_log=None)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        site = web.TCPSite(runner, host, port, backlog=LISTEN_BACKLOG, reuse_port=reuse_port)
        await site.start()
        await stop.wait()
    finally:
        await runner.cleanup()


def _die_with_parent(parent: int) -> None:
    """Asks Linux to SIGTERM this worker when the supervisor dies, so a SIGKILLed supervisor
    leaves no orphan holding the port."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent:  # the supervisor died before prctl took effect
        os._exit(1)


def _run_worker(build: BuildApp, host: str, port: int, reuse_port: bool) -> int:
    try:
        uvloop.run(serve(build, host, port, reuse_port))
    except Exception:  # e.g. the port is taken: say why, exit non-zero
        traceback.print_exc()
        return 1
    return 0


def _supervise(build: BuildApp, host: str, port: int, processes: int) -> int:
    """Forks the workers, forwards SIGTERM/SIGINT to them and waits for all of them to exit.

    The supervisor never runs an event loop, so each worker forks from a clean interpreter.
    """
    parent = os.getpid()
    workers: list[int] = []
    for _ in range(processes):
        pid = os.fork()
        if pid == 0:  # never return into the supervisor's code, whatever happens
            code = 1
            try:
                _die_with_parent(parent)
                code = _run_worker(build, host, port, reuse_port=True)
            finally:
                os._exit(code)
        workers.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for worker in workers:
            try:
                os.kill(worker, signum)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    for worker in workers:
        _, wait_status = os.waitpid(worker, 0)
        status = status or os.waitstatus_to_exitcode(wait_status)
    return 0 if status == 0 else 1


def main(build: BuildApp, description: str, argv: Sequence[str] | None = None) -> int:
    """Entry point of a peer: one process serves directly, N > 1 are supervised workers."""
    args = parse_args(sys.argv[1:] if argv is None else argv, description)
    if args.processes == 1:
        return _run_worker(build, args.host, args.port, reuse_port=False)
    return _supervise(build, args.host, args.port, args.processes)
