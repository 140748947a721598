"""Streams: ``/compress`` and ``/decompress`` of bodies larger than one job, in bounded memory (issue 19).

A body over :attr:`app.config.Config.stream_threshold` (a Content-Length above it, or a chunked
body that outgrew it) is not held whole: it is cut into blocks as it arrives, each block goes
through one :class:`warp.stream.CompressStream` (one zstd frame over the whole body, every block
on the device) or :class:`~warp.stream.DecompressStream`, and the output goes back as a
``Transfer-Encoding: chunked`` response while the upload continues.

Memory per stream is :data:`WINDOW` blocks read ahead plus the block on the device and its
output, whatever the body's size. Backpressure is aiohttp's flow control, both ways: a client that
reads the response slowly makes ``response.write`` wait for the transport to drain, the device
loop stops taking blocks, the read-ahead stops reading once the window is full, and aiohttp
pauses the socket once its own buffer is full (so the uploader's TCP window closes); an uploader
that sends slowly holds no more than the window, and ``--body-timeout`` bounds each wait for it
(not the whole upload, which may take hours).

The response head is held back until the first byte of output, so a failure before it (corrupt
input on /decompress, a body declared over ``--max-stream``, an overload) is still answered as a
problem document with its own status. After the head went out the status cannot change: the
response is cut — the connection closes without the chunked body's last chunk — so the client
sees a failed transfer (curl exits 18, aiohttp raises ``ClientPayloadError``), never a truncated
success. ``warpzip_streams_total{outcome}`` counts how each stream ended.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final, final

from aiohttp import StreamReader, web

from app.api import body, errors, failures
from app.api.errors import Problem
from app.keys import CONFIG, METRICS, RUNTIME
from app.metrics import Metrics
from warp import WarpError
from warp.session import Bytes, Compressor

log = logging.getLogger("warpzip")

BLOCK: Final = 1 << 20
"""Bytes handed to the stream per call: large enough that a call's overhead (a job, a doorbell, a
completion) is small against its data, small enough that a few in memory are cheap."""
WINDOW: Final = 4
"""Blocks read ahead while the device works on one: the upload keeps moving during a job, and this
many blocks are the most a stream holds, however slow its reader or uploader."""

Item = bytearray | BaseException | None


@final
class Upload:
    """The request body as blocks of about :data:`BLOCK` bytes, read ahead by a task into a queue of
    :data:`WINDOW`; an error of the upload (too large, too slow, cut) comes out of :meth:`next`."""

    def __init__(self, content: StreamReader, prefix: tuple[Bytes, ...], limit: int, timeout: float) -> None:
        self._queue: asyncio.Queue[Item] = asyncio.Queue(WINDOW)
        self._task = asyncio.ensure_future(self._read(content, prefix, limit, timeout))

    async def next(self) -> bytearray | None:
        """The next block, or ``None`` at the end of the body."""
        item = await self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._task.cancel()

    async def _read(self, content: StreamReader, prefix: tuple[Bytes, ...], limit: int, timeout: float) -> None:
        pending = bytearray().join(prefix)
        total = len(pending)
        try:
            while True:
                if limit and total > limit:
                    raise Problem(413, "body-too-large", f"the streamed body passed the limit of {limit} bytes")
                if len(pending) >= BLOCK:
                    await self._queue.put(pending)
                    pending = bytearray()
                try:
                    async with asyncio.timeout(timeout):
                        chunk = await content.readany()
                except TimeoutError:
                    raise failures.body_timeout(timeout) from None
                if not chunk:
                    break
                total += len(chunk)
                pending += chunk
            if pending:
                await self._queue.put(pending)
            await self._queue.put(None)
        except Exception as exc:  # handed to the device loop, which answers or cuts
            await self._queue.put(exc)


@final
class Sink:
    """The chunked response, its head held back until the first output byte (see the module
    docstring); counts the stream's bytes as they pass."""

    def __init__(self, request: web.Request, direction: str, metrics: Metrics, limit: int) -> None:
        self.response: web.StreamResponse | None = None
        self._request = request
        self._direction = direction
        self._metrics = metrics
        self._limit = limit if direction == "decompress" else 0
        self._produced = 0

    async def write(self, data: bytes, consumed: int) -> None:
        """``data`` is the output for ``consumed`` more bytes of the body."""
        self._metrics.stream_bytes(self._direction, consumed, len(data))
        if not data:
            return
        self._produced += len(data)
        if self._limit and self._produced > self._limit:
            raise Problem(413, "output-too-large", f"the decompressed stream passed the limit of {self._limit} bytes")
        response = self.response or await self._start()
        await response.write(data)

    async def finish(self) -> web.StreamResponse:
        response = self.response or await self._start()
        await response.write_eof()
        return response

    async def _start(self) -> web.StreamResponse:
        response = self.response = web.StreamResponse()
        response.content_type = body.CONTENT_TYPES[self._direction]
        response.enable_chunked_encoding()
        await response.prepare(self._request)
        return response


async def serve(request: web.Request, direction: str, session: body.Session,
                prefix: tuple[Bytes, ...] = ()) -> web.StreamResponse:
    """Stream the body of ``request`` (``prefix``: what was already read of it) through the device,
    with the parameters of ``session`` (the session the request chose, never run itself)."""
    app = request.app
    config, metrics = app[CONFIG], app[METRICS]
    upload = Upload(request.content, prefix, config.max_stream, config.body_timeout)
    sink = Sink(request, direction, metrics, config.max_stream)
    metrics.stream_begin(direction)
    outcome = "client_closed"
    try:
        await _run(request, session, upload, sink)
        response = await sink.finish()
        outcome = "ok"
        return response
    except ConnectionError:
        raise  # the client went away: nobody to answer (the guard counts it as 499)
    except Exception as exc:
        problem = problem_of(exc)
        if sink.response is None:
            outcome = "refused"
            return _refused(request, problem)
        outcome = "cut"
        log.warning("stream on %s cut after its response head: %s", request.path, problem.detail)
        if request.transport is not None:
            request.transport.close()  # what is written goes out, then the connection ends before the last chunk
        return sink.response  # aiohttp's write_eof meets the closing transport and ends the request
    finally:
        upload.close()
        metrics.stream_end(direction, outcome)


async def _run(request: web.Request, session: body.Session, upload: Upload, sink: Sink) -> None:
    """Run the upload through a stream with ``session``'s parameters (level, checksum, dictionary;
    the dictionary resolver of a decompression)."""
    runtime = request.app[RUNTIME]
    if isinstance(session, Compressor):
        stream = runtime.compress_stream(session.level, session.checksum, dictionary=session.dictionary)
        async with stream:
            while (block := await upload.next()) is not None:
                await sink.write(await stream.acompress(block), len(block))
            await sink.write(await stream.afinish(), 0)
        return
    unstream = runtime.decompress_stream(session.dictionaries)
    async with unstream:
        while (block := await upload.next()) is not None:
            consumed = len(block)
            async for piece in unstream.adecompress(block):
                await sink.write(piece, consumed)
                consumed = 0
            await sink.write(b"", consumed)
        await unstream.afinish()


def _refused(request: web.Request, problem: Problem) -> web.StreamResponse:
    """``problem`` as the answer, closing the connection if the body is not all read (it will not be)."""
    answer = errors.response(problem)
    if not request.content.is_eof():
        answer.force_close()
    return answer


def problem_of(exc: Exception) -> Problem:
    """What a stream that failed with ``exc`` answers (before its head) or logs (after)."""
    if isinstance(exc, Problem):
        return exc
    if isinstance(exc, failures.JOB_ERRORS):
        return failures.job_problem(exc)
    if isinstance(exc, WarpError):  # the device was lost mid-frame: a stream cannot move to the cpu
        return Problem(500, "engine-error", f"the accelerator failed the stream: {exc}")
    log.error("unhandled error in a stream", exc_info=exc)
    return errors.internal()

