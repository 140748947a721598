"""Moving bodies between HTTP and SVA buffers.

Requests stream chunk by chunk into a heap buffer (sized and grown by :mod:`app.budget`, the
rules the data path follows too), so the body never exists as one joined Python ``bytes``. Responses are written
from the result's view into the heap; the transport may still hold that memory after
``write_eof`` (uvloop keeps a buffer export until the kernel took the bytes), so the buffer goes
back to the pool only once the export is gone.
"""

from __future__ import annotations

import asyncio
from typing import Final

from aiohttp import web

from app.api.errors import Problem
from app.budget import GROW_FROM, Bodies, grown
from warp import HeapExhausted, Result, Runtime
from warp.mem import Buffer
from warp.session import Compressor, Decompressor

#: What a /compress or /decompress request runs.
Session = Compressor | Decompressor

CONTENT_TYPES: Final = {"compress": "application/zstd", "decompress": "application/octet-stream"}
COPY_BELOW: Final = 16 << 10
RETRY_AFTER: Final = {"Retry-After": "1"}


def check_encoding(request: web.Request) -> None:
    """aiohttp would inflate gzip/deflate/br bodies silently; we compress exactly what was sent."""
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise Problem(415, "unsupported-encoding",
                      f"Content-Encoding {encoding!r} is not accepted; send the body as identity")


def check_length(request: web.Request, limit: int) -> None:
    """413 before a byte of the body is read, when the declared length is already too much."""
    length = request.content_length
    if length is not None and length > limit:
        raise Problem(413, "body-too-large", f"the body is {length} bytes; the limit is {limit}")


def out_of_memory() -> Problem:
    return Problem(503, "overloaded", "no buffer memory is free right now; retry shortly", RETRY_AFTER)


def alloc(runtime: Runtime, size: int) -> Buffer:
    try:
        return runtime.alloc(size)
    except HeapExhausted:
        raise out_of_memory() from None


async def read_into_heap(request: web.Request, runtime: Runtime, bodies: Bodies, limit: int,
                         spill: bool = False) -> tuple[Buffer, int, bytes | None]:
    """Stream the body into an SVA buffer; returns the buffer (owned by the caller), its length,
    and ``None`` — or, with ``spill``, once the body passes ``limit``: the buffer of the first
    ``limit`` bytes or so and the chunk that did not fit, the rest still to read (a chunked body
    that outgrew the whole-body path becomes a stream: :mod:`app.api.streams`).

    While it arrives, the buffer counts in ``bodies.held``: a request aiohttp serves (with
    ``Expect: 100-continue``, say) must not reserve a declared length the data path would refuse
    to reserve (issue 15, item 7)."""
    declared = request.content_length
    if declared is None:  # chunked: grows from the first block up to the limit
        declared, first = limit, GROW_FROM
    else:
        first = bodies.first(declared, declared if request.content.is_eof() else 0)
    buffer = alloc(runtime, first)
    held = buffer.capacity
    bodies.held += held
    size = 0
    try:
        while chunk := await request.content.readany():
            if size + len(chunk) > limit:
                if spill:
                    return buffer, size, chunk
                raise Problem(413, "body-too-large", f"the body passed the limit of {limit} bytes")
            if size + len(chunk) > buffer.capacity:
                bigger = alloc(runtime, grown(buffer.capacity, size + len(chunk), max(declared, size + len(chunk))))
                bigger.write(0, buffer.view[:size])
                buffer.release()
                buffer = bigger
                bodies.held += buffer.capacity - held
                held = buffer.capacity
            buffer.write(size, chunk)
            size += len(chunk)
    except BaseException:
        buffer.release()
        raise
    finally:
        bodies.held -= held
    return buffer, size, None


async def send_result(request: web.Request, result: Result | bytes, content_type: str,
                      headers: dict[str, str]) -> web.StreamResponse:
    """Write ``result`` as the response body straight from the heap, then recycle its buffer
    (``bytes``, an lz77_zstd frame built in this process, are sent as they are).

    Below ``COPY_BELOW`` bytes the result is copied out and returned as an ordinary response: a
    memcpy of a few KiB costs less than the three awaited steps of a streamed response (measured
    about 7% more requests per second at 4 KiB).
    """
    if isinstance(result, bytes):
        return web.Response(body=result, content_type=content_type, headers=headers)
    if len(result) < COPY_BELOW:
        body = bytes(result.view)
        _release_when_unexported(result)
        return web.Response(body=body, content_type=content_type, headers=headers)
    try:
        # A body-less web.Response, not StreamResponse: it holds the headers back until the first
        # write, so headers and body leave in one writev instead of two syscalls.
        response = web.Response(headers={**headers, "Content-Length": str(len(result))})
        response.content_type = content_type
        await response.prepare(request)
        view = result.view
        await response.write(view)
        await response.write_eof()
    except BaseException:
        _release_when_unexported(result)
        raise
    _release_when_unexported(result)
    return response


def _release_when_unexported(result: Result, delay: float = 0.001) -> None:
    """Release the result once no transport holds its memory (``memoryview.release`` says so)."""
    try:
        result.view.release()
    except BufferError:
        asyncio.get_running_loop().call_later(delay, _release_when_unexported, result, min(delay * 2, 1.0))
        return
    result.release()
