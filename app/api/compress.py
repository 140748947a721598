"""``POST /compress`` and ``POST /decompress``: bodies in, through the accelerator, bodies out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from app.api import body
from app.api.errors import Problem
from app.keys import ADMISSION, CONFIG, METRICS, RUNTIME
from warp import HeapExhausted, JobFailed, JobTimeout, Result, Runtime, RuntimeClosed, abi
from warp.mem import Buffer


def parse_level(query: web.Request) -> int:
    raw = query.query.get("level", "3")
    try:
        level = int(raw)
    except ValueError:
        raise Problem(400, "bad-level", f"level must be an integer from {abi.LEVEL_MIN} to {abi.LEVEL_MAX}, "
                      f"got {raw!r}") from None
    if not abi.LEVEL_MIN <= level <= abi.LEVEL_MAX:
        raise Problem(400, "bad-level", f"level must be from {abi.LEVEL_MIN} to {abi.LEVEL_MAX}, got {level}")
    return level


def parse_flag(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "0")
    if raw not in ("0", "1"):
        raise Problem(400, f"bad-{name}", f"{name} must be 0 or 1, got {raw!r}")
    return raw == "1"


async def handle_compress(request: web.Request) -> web.StreamResponse:
    level = parse_level(request)
    checksum = parse_flag(request, "checksum")
    session = request.app[RUNTIME].compressor(level, checksum)
    return await _transform(request, session.acompress_buffer, "compress")


async def handle_decompress(request: web.Request) -> web.StreamResponse:
    session = request.app[RUNTIME].decompressor(request.app[CONFIG].max_body)
    return await _transform(request, session.adecompress_buffer, "decompress")


Transform = Callable[[Buffer, int], Awaitable[Result]]


CONTENT_TYPES = {"compress": "application/zstd", "decompress": "application/octet-stream"}


async def _transform(request: web.Request, run: Transform, direction: str) -> web.StreamResponse:
    """The shared request path: validate, admit, stream in, run the job, stream out."""
    app = request.app
    config, runtime, metrics, admission = app[CONFIG], app[RUNTIME], app[METRICS], app[ADMISSION]
    body.check_encoding(request)
    body.check_length(request, config.max_body)
    if not admission.admit():
        raise Problem(503, "overloaded", f"more than {admission.limit} requests in progress; retry shortly",
                      body.RETRY_AFTER)
    try:
        src, size = await _read_body(request, runtime, config.max_body, config.body_timeout)
        driver = runtime.driver.name
        started = time.perf_counter()
        try:
            result = await run(src, size)
        except JobFailed as exc:
            raise _job_problem(exc) from None
        except JobTimeout:
            raise Problem(503, "timeout", "the accelerator did not finish in time; retry shortly",
                          body.RETRY_AFTER) from None
        except RuntimeClosed:  # stopping, and --shutdown-timeout ran out before this job finished
            raise Problem(503, "shutting-down", "the server is shutting down; retry", body.RETRY_AFTER) from None
        except HeapExhausted:
            raise body.out_of_memory() from None
        metrics.observe_job(driver, time.perf_counter() - started)
        metrics.observe_bytes(direction, size, len(result))
        uncompressed = size if direction == "compress" else len(result)
        return await body.send_result(request, result, CONTENT_TYPES[direction],
                                      {"X-Uncompressed-Length": str(uncompressed)})
    finally:
        admission.leave()


async def _read_body(request: web.Request, runtime: Runtime, limit: int, timeout: float) -> tuple[Buffer, int]:
    """The body in an SVA buffer, within ``timeout`` (a slow client must not hold a buffer) —
    unless it came whole with the head, as small bodies do: then there is nothing to wait for,
    and no timer is armed (about 3% of a 4 KiB request's CPU in a py-spy profile)."""
    if request.content.is_eof():
        return await body.read_into_heap(request, runtime, limit)
    try:
        async with asyncio.timeout(timeout):
            return await body.read_into_heap(request, runtime, limit)
    except TimeoutError:
        raise Problem(408, "body-timeout", f"the body did not arrive within {timeout:g} s") from None


def _job_problem(exc: JobFailed) -> Problem:
    if exc.status == abi.Status.CORRUPT_INPUT:
        return Problem(400, "corrupt-frame", "the body is not a valid zstd frame")
    if exc.status == abi.Status.DST_TOO_SMALL:
        return Problem(413, "output-too-large", "the decompressed output would exceed the body limit")
    return Problem(500, "engine-error", f"the accelerator failed the job: {exc}")
