"""The echo floor: the peers' aiohttp + uvloop server with the compression taken out.

``POST /compress`` reads the whole body and answers its first third, about what zstd returns for
text, so the response costs what a compressed one would to send. What this server spends per
request is the HTTP work every server here must do; a server's host CPU over it is what its
compression, and any hand-off to an accelerator, costs on top. It is a reference, not a peer: it
does not do the job, so it never sets the bar for throughput.
"""

from __future__ import annotations

from aiohttp import web

from bench.peers.common import create_app, main


def echo_answer(body: bytes) -> bytes:
    """What the echo floor answers to ``body``; the driver checks responses against it."""
    return body[: len(body) // 3]


def build() -> web.Application:
    """An app whose compress step returns the first third of the body, on the loop's thread."""

    async def compress(body: bytes, _level: int) -> bytes:
        return echo_answer(body)

    return create_app(compress, content_type="application/octet-stream")


if __name__ == "__main__":
    raise SystemExit(main(build, "aiohttp + uvloop echo floor: answers the first third of the body, no compression"))
