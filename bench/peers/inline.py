"""Peer "inline": zstd called right in the aiohttp handler, the server most users would write.

It blocks the event loop for the length of each compression, which is cheap for small bodies and
the reason it falls behind on large ones; ``--processes 2`` is the usual fix (one loop per core).
"""

from __future__ import annotations

from aiohttp import web

from bench.peers.common import Compressors, create_app, main


def build() -> web.Application:
    """An app whose compress step runs on the event loop's own thread."""
    compressors = Compressors()

    async def compress(body: bytes, level: int) -> bytes:
        return compressors.compress(body, level)

    return create_app(compress)


if __name__ == "__main__":
    raise SystemExit(main(build, "aiohttp + uvloop peer compressing inline in the handler"))
