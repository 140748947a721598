"""Peer "executor": zstd in a 2-thread ``ThreadPoolExecutor`` via ``loop.run_in_executor``.

zstd releases the GIL, so large bodies use both cores while the loop keeps accepting requests; for
small bodies the hand-off between threads costs more than the compression it moves off the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from bench.peers.common import Compressors, create_app, main

THREADS = 2
"""One per core of the benchmark machine."""


def build() -> web.Application:
    """An app whose compress step runs in a per-process thread pool, shut down with the app."""
    compressors = Compressors()
    pool = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="zstd")

    async def compress(body: bytes, level: int) -> bytes:
        return await asyncio.get_running_loop().run_in_executor(pool, compressors.compress, body, level)

    async def pool_lifetime(_app: web.Application) -> AsyncIterator[None]:
        yield
        pool.shutdown(wait=True)

    app = create_app(compress)
    app.cleanup_ctx.append(pool_lifetime)
    return app


if __name__ == "__main__":
    raise SystemExit(main(build, "aiohttp + uvloop peer compressing in a 2-thread executor"))
