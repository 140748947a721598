"""``POST /compress`` and ``POST /decompress``: bodies in, through the accelerator, bodies out.

Two front ends share this module: the aiohttp handlers below, and the data path
(:mod:`app.datapath`), which serves the common, well-formed request without aiohttp's
per-request objects. Both choose the session with :func:`session_for`, answer a failed job with
:func:`app.api.failures.job_problem` and count it with :func:`observe`, so parameters, errors and metrics cannot
drift apart.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from typing import Final

from aiohttp import hdrs, web
from aiohttp.http import HttpVersion11

from app import budget
from app.api import body, failures, streams
from app.api.dictionaries import named as dictionary_of
from app.api.errors import Problem
from app.budget import Bodies
from app.config import Config
from app.dictionaries import WorkerDictionaries
from app.keys import ADMISSION, BODIES, CONFIG, DICTIONARIES, METRICS, RUNTIME
from app.metrics import Metrics
from warp import Result, Runtime, abi
from warp.mem import Buffer
from warp.session import ALGORITHMS, Lz77Compressor

DIRECTIONS: Final = {"/compress": "compress", "/decompress": "decompress"}


PARAMETERS: Final = {"compress": frozenset({"level", "checksum", "dict", "alg"}), "decompress": frozenset()}
_INTEGER: Final = re.compile(r"-?[0-9]{1,4}")  # ASCII only: int() would also take "1_0" and "١٠"


def parse_level(raw: str | None) -> int:
    if raw is None:
        return 3
    if not _INTEGER.fullmatch(raw):
        raise Problem(400, "bad-level", f"level must be an integer from {abi.LEVEL_MIN} to {abi.LEVEL_MAX}, "
                      f"got {raw!r}")
    level = int(raw)
    if not abi.LEVEL_MIN <= level <= abi.LEVEL_MAX:
        raise Problem(400, "bad-level", f"level must be from {abi.LEVEL_MIN} to {abi.LEVEL_MAX}, got {level}")
    return level


def parse_flag(raw: str | None, name: str) -> bool:
    if raw is None:
        return False
    if raw not in ("0", "1"):
        raise Problem(400, f"bad-{name}", f"{name} must be 0 or 1, got {raw!r}")
    return raw == "1"


def parse_algorithm(raw: str, dictionary: bool) -> str:
    """``alg``, when given: ``zstd`` (the default: the engine makes whole frames) or ``lz77_zstd``
    (the HiSilicon path: the engine finds the matches, this process entropy-codes the frame)."""
    if raw not in ALGORITHMS:
        raise Problem(400, "bad-alg", f"alg must be one of {', '.join(ALGORITHMS)}, got {raw!r}")
    if raw != "zstd" and dictionary:
        raise Problem(400, "bad-alg", f"dict needs alg=zstd: {raw} takes no dictionary")
    return raw


def session_for(direction: str, query: Mapping[str, str], runtime: Runtime, config: Config,
                dictionaries: WorkerDictionaries) -> body.Session | Lz77Compressor:
    """The session a request asks for, from its query; :class:`Problem` 400 for a bad parameter or
    one the resource does not take (a misspelt ``lvl=5`` must not compress at the default level),
    404 for a ``dict`` the store does not have. Frames to decompress name their own dictionary (one per body)."""
    for name in query:
        if name not in PARAMETERS[direction]:
            known = ", ".join(sorted(PARAMETERS[direction])) or "none"
            raise Problem(400, "bad-parameter", f"unknown query parameter {name!r} (/{direction} takes {known})")
    if direction == "compress":
        level, checksum = parse_level(query.get("level")), parse_flag(query.get("checksum"), "checksum")
        named, alg = query.get("dict"), query.get("alg")
        if alg is not None and parse_algorithm(alg, named is not None) == "lz77_zstd":
            return runtime.compressor(level, checksum, "lz77_zstd")
        dictionary = None if named is None else dictionary_of(dictionaries, named)
        return runtime.compressor(level, checksum, dictionary=dictionary)
    return runtime.decompressor(config.max_body, dictionaries.resolve)


async def run_job(session: body.Session | Lz77Compressor, src: Buffer, size: int, direction: str, runtime: Runtime,
                  metrics: Metrics) -> Result | bytes:
    """Run the job on ``src[:size]`` (the session takes the buffer over); every way it can fail
    becomes the problem the client gets. An lz77_zstd frame is built in this process, so it is
    ``bytes``, not a heap buffer."""
    driver = runtime.driver.name
    started = time.perf_counter()
    try:
        if isinstance(session, Lz77Compressor):
            result: Result | bytes = await session.acompress_buffer(src, size)
        else:
            result = await session.arun_buffer(src, size)
    except failures.JOB_ERRORS as exc:
        raise failures.job_problem(exc) from None
    observe(metrics, driver, started, direction, size, result)
    return result


def observe(metrics: Metrics, driver: str, started: float, direction: str, size: int, result: Result | bytes) -> None:
    metrics.observe_job(driver, time.perf_counter() - started)
    metrics.observe_bytes(direction, size, len(result))


async def handle_compress(request: web.Request) -> web.StreamResponse:
    return await _transform(request, "compress")


async def handle_decompress(request: web.Request) -> web.StreamResponse:
    return await _transform(request, "decompress")


async def _transform(request: web.Request, direction: str) -> web.StreamResponse:
    """The aiohttp request path: validate, admit, stream in, run the job, stream out."""
    app = request.app
    config, runtime, metrics, admission = app[CONFIG], app[RUNTIME], app[METRICS], app[ADMISSION]
    bodies = app[BODIES]
    session, stream = _acceptable(request, direction)
    if not admission.admit():
        raise failures.overloaded(admission.limit)
    try:
        if stream:
            return await streams.serve(request, direction, _streamable(session, config))
        src, size, rest = await _read_body(request, runtime, bodies, config.stream_threshold, config.body_timeout)
        if rest is not None:  # a chunked body that outgrew the whole-body path: it streams from here
            prefix = bytes(src.view[:size])
            src.release()
            return await streams.serve(request, direction, _streamable(session, config), (prefix, rest))
        if not size and direction == "decompress":
            src.release()
            raise Problem(400, "empty-body", "the body is empty; send a zstd frame")
        if request.content_length is None:  # a declared length was checked before the body (_acceptable)
            try:
                _lz77_room(session, size, config)
            except Problem:
                src.release()
                raise
        result = await run_job(session, src, size, direction, runtime, metrics)
        uncompressed = size if direction == "compress" else len(result)
        return await body.send_result(request, result, body.CONTENT_TYPES[direction],
                                      {"X-Uncompressed-Length": str(uncompressed)})
    finally:
        admission.leave()


def _acceptable(request: web.Request, direction: str) -> tuple[body.Session | Lz77Compressor, bool]:
    """The session the request asks for and whether its body streams (declared over the stream
    threshold), after every refusal that needs no body: a bad parameter (400), an unknown ``dict``
    (404), a Content-Encoding (415), a declared length over ``--max-stream`` (413), or over the
    stream threshold with a session that cannot stream (413)."""
    config = request.app[CONFIG]
    stream = (request.content_length or 0) > config.stream_threshold
    session = session_for(direction, request.query, request.app[RUNTIME], config, request.app[DICTIONARIES])
    body.check_encoding(request)
    if stream:
        _streamable(session, config)
        if config.max_stream:
            body.check_length(request, config.max_stream)
    elif request.content_length is not None:
        _lz77_room(session, request.content_length, config)
    return session, stream


def _lz77_room(session: body.Session | Lz77Compressor, size: int, config: Config) -> None:
    """413 for an lz77_zstd body whose BD outputs an idle heap could not hold beside it (that
    would be a 503 "retry" that never succeeds); a body that fits may still find the heap busy."""
    if isinstance(session, Lz77Compressor) and not budget.lz77_fits(config.heap_size, size):
        largest = budget.largest_lz77_body(config.heap_size, config.stream_threshold)
        raise Problem(413, "lz77-body-too-large", f"alg=lz77_zstd needs the body and ~3.7 times it in BD outputs "
                      f"at once; this service's heap (--heap-size) holds that for a body of at most {largest} "
                      "bytes; send a larger one with alg=zstd")


def _streamable(session: body.Session | Lz77Compressor, config: Config) -> body.Session:
    """``session`` for a body that streams; 413 for lz77_zstd, whose frame is built from all of a
    body's BDs at once (``ZSTD_compressSequences`` takes a whole frame's sequences)."""
    if isinstance(session, Lz77Compressor):
        raise Problem(413, "lz77-body-too-large", f"alg=lz77_zstd compresses whole bodies of up to "
                      f"{config.stream_threshold} bytes (--stream-above); larger ones stream, with alg=zstd")
    return session


async def expect_continue(request: web.Request) -> None:
    """``Expect: 100-continue`` on /compress or /decompress: refuse now what would be refused once
    the body arrived (a bad parameter, a Content-Encoding, a declared length over ``--max-stream``),
    so that a client such as curl does not send megabytes to read a 413; else ``100 Continue``."""
    if request.headers.get(hdrs.EXPECT, "").lower() != "100-continue":
        raise web.HTTPExpectationFailed()  # answered as the problem "expectation-failed"
    _acceptable(request, DIRECTIONS[request.path])
    if request.version == HttpVersion11:
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # as aiohttp's own: the response proper has not started


async def _read_body(request: web.Request, runtime: Runtime, bodies: Bodies, limit: int,
                     timeout: float) -> tuple[Buffer, int, bytes | None]:
    """The body in an SVA buffer, within ``timeout`` (a slow client must not hold a buffer) —
    unless it came whole with the head, as small bodies do: then there is nothing to wait for,
    and no timer is armed (about 3% of a 4 KiB request's CPU in a py-spy profile)."""
    if request.content.is_eof():
        return await body.read_into_heap(request, runtime, bodies, limit, spill=True)
    try:
        async with asyncio.timeout(timeout):
            return await body.read_into_heap(request, runtime, bodies, limit, spill=True)
    except TimeoutError:
        raise failures.body_timeout(timeout) from None
