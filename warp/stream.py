"""Stream sessions: input of any size as **one** zstd frame, in bounded memory (UADK's
``wd_do_comp_strm``).

A stream session takes one queue for its life — UADK's scheduler picks a session's ctx when the
session is created, not per request — and a ctx_buf in the SVA heap. Its input goes to the device
as stateful BDs of at most ``block`` bytes, in order, and the engine carries the zstd context from
one BD to the next (:mod:`warp.device.streams`), so a body of gigabytes is one frame whose memory
here is one BD's source and destination at a time. Compared with a frame per block, nothing is
lost at block boundaries (matches reach back across them) and a decoder sees one frame; the price
is that one stream's blocks run one after another on one engine, so a single stream does not use
every engine (many streams do).

On the ``cpu`` driver the same :class:`~warp.zstream.StreamContext` runs in a thread. A stream
cannot move between the two mid-frame (its state is in the engine), so a stream whose device is
lost under it fails with :class:`~warp.errors.DeviceLost`; the caller decides what the half-sent
output is worth. Calls on one stream must not overlap.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Final, Self, final

from warp import abi, codec, zstream
from warp.dictionary import Dictionary, Resolver
from warp.drv.base import Job, end_stream
from warp.drv.zip import ZipDriver, ZipQueue
from warp.errors import ContextTooLarge, DeviceLost, JobFailed, JobTimeout, RuntimeClosed, UnknownDictionary
from warp.mem import Buffer
from warp.zstream import StreamContext

if TYPE_CHECKING:
    from warp.runtime import Runtime

Bytes = bytes | bytearray | memoryview

#: Input per compression BD (well under ZIP's 8 MiB ``HZ_MAX_SIZE``), and output per decompression BD.
DEFAULT_BLOCK: Final = 1 << 20
#: Room past ``ZSTD_compressBound`` for what a flushed BD may add: the frame header on the first,
#: the empty last block and checksum on the FINISH one.
FLUSH_SLACK: Final = 64


class _Stream:
    """A session's queue, ctx_buf and zstd state; one BD at a time."""

    def __init__(self, runtime: Runtime, direction: abi.QcType, level: int, checksum: bool, block: int,
                 dictionary: Dictionary | None = None) -> None:
        if block <= 0:
            raise ValueError("block must be positive")
        if runtime.closed:
            raise RuntimeClosed("the runtime is closed")
        self._runtime = runtime
        self._direction = direction
        self._level, self._checksum, self.block = level, checksum, block
        self._mode = abi.STREAM_STATEFUL | abi.STREAM_NEW
        self._in_flight: Job | None = None
        self.closed = False
        self.total_in = self.total_out = 0
        #: The dictionary of the frame in progress (named in the first BD: the engine loads it there).
        self.dictionary = dictionary
        driver = runtime.driver
        self._queue: ZipQueue | None = None
        self._ctx: Buffer | None = None
        self._soft: StreamContext | None = None
        self._charge = 0  # what the cpu context holds of the runtime's stream_memory
        if isinstance(driver, ZipDriver):
            key = runtime.scheduler.assign(direction, runtime.queue_count)
            self._queue = driver.scheduler.pick(driver.queues[direction], key)
            self._ctx = runtime.alloc(abi.STREAM_CTX_SIZE)

    @property
    def on_device(self) -> bool:
        return self._queue is not None

    async def _bd(self, data: memoryview, capacity: int, finish: bool) -> tuple[int, int, bytes]:
        """One BD: ``(status, consumed, output)``. A failed BD closes the stream."""
        if self.closed:
            raise RuntimeClosed("the stream is closed")
        need = self._footprint(data) if self._mode & abi.STREAM_NEW else 0
        try:
            if self._queue is None:
                status, consumed, out = await self._soft_bd(data, capacity, finish, need)
            else:
                status, consumed, out = await self._device_bd(data, capacity, finish)
        except BaseException:
            self.close()
            raise
        self._mode &= ~abi.STREAM_NEW
        self.total_in += consumed
        self.total_out += len(out)
        if status != abi.Status.OK and status not in abi.STREAM_PROGRESS:
            self.close()
            raise JobFailed(status, f"stream BD failed with engine status 0x{status:02x}")
        return status, consumed, out

    def _footprint(self, data: memoryview) -> int:
        """What the context a first BD (``data``) makes is charged (:func:`warp.zstream.footprint`);
        :class:`ContextTooLarge` (the stream closed) if that alone is over the runtime's
        ``stream_memory``: the device would refuse it every time."""
        length = 0 if self.dictionary is None else self.dictionary.length
        limit = self._runtime.stream_memory.limit
        need = zstream.footprint(self._direction, self._level, length, codec.ffi.from_buffer(data), len(data))
        if need > limit:
            self.close()
            raise ContextTooLarge(need, limit, self._advice(limit, length))
        return need

    def _advice(self, limit: int, dictionary_length: int) -> str:
        if self._direction is abi.QcType.DECOMPRESS:
            return "the frame's window is too large to stream here"
        level = zstream.highest_level(limit, dictionary_length)
        return "no level fits" if level is None else f"stream at level {level} or lower"

    async def _soft_bd(self, data: memoryview, capacity: int, finish: bool, need: int) -> tuple[int, int, bytes]:
        """One BD on the cpu driver. A stream's first BD makes its context, charged ``need``
        against the runtime's ``stream_memory`` as the device charges its own (``NO_CTX_MEMORY``
        if it does not fit), so a worker without a device is bounded the same way."""
        if self._soft is None or self._mode & abi.STREAM_NEW:
            self._end_soft()
            if not self._runtime.stream_memory.take(need):
                return abi.Status.NO_CTX_MEMORY, 0, b""
            self._soft, self._charge = self._soft_context(), need
        return await asyncio.to_thread(_soft_step, self._soft, data, capacity, finish)

    def _end_soft(self) -> None:
        self._soft = None
        self._runtime.stream_memory.give(self._charge)
        self._charge = 0

    def _soft_context(self) -> StreamContext:
        """What the engine makes of a stream's first BD, for the cpu: a context with the
        dictionary the BD names copied in."""
        if self.dictionary is None:
            return StreamContext(self._direction, self._level, self._checksum)
        pointer = codec.pointer(self.dictionary.view)
        try:
            return StreamContext(self._direction, self._level, self._checksum, (pointer, self.dictionary.length))
        finally:
            codec.release(pointer)

    async def _device_bd(self, data: memoryview, capacity: int, finish: bool) -> tuple[int, int, bytes]:
        assert self._queue is not None and self._ctx is not None
        runtime = self._runtime
        src = runtime.load(data) if len(data) else runtime.alloc(1)
        try:
            dst = runtime.alloc(max(capacity, 1))
        except BaseException:
            src.release()
            raise
        job = Job(direction=self._direction, src=src, length=len(data), dst=dst, level=self._level,
                  checksum=self._checksum, mode=self._mode | (abi.STREAM_FINISH if finish else 0), ctx=self._ctx,
                  dictionary=self.dictionary)
        try:
            future = self._queue.submit(job)
        except DeviceLost:
            job.discard()
            raise
        self._in_flight = job
        try:
            await asyncio.wait_for(asyncio.shield(future), runtime.timeout)
        except TimeoutError:
            job.abandon()  # its buffers (and the ctx_buf, see close) go back when the engine lets go
            raise JobTimeout(f"stream BD did not complete within {runtime.timeout} s") from None
        except DeviceLost as lost:
            self._in_flight = None
            if lost.may_write:  # a stopped queue: the device may still write them until it is put
                for buffer in (job.src, job.dst, self._ctx):
                    if buffer is not None:
                        lost.hold(buffer)
                self._ctx = None
            else:
                job.discard()
            raise
        except BaseException:
            job.abandon()
            raise
        self._in_flight = None
        try:
            return job.status, job.consumed, bytes(dst.view[:job.produced])
        finally:
            job.discard()

    def close(self) -> None:
        """End the session here; idempotent. The ctx_buf goes back to the heap once no BD of the
        stream is in flight (a cancelled one hands it to its job, freed when the engine lets go)."""
        if self.closed:
            return
        self.closed = True
        self._end_soft()
        ctx, self._ctx = self._ctx, None
        job, self._in_flight = self._in_flight, None
        if ctx is None:
            return
        if job is not None and not job.finished:
            job.owns_ctx = True
        else:
            end_stream(ctx)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


@final
class CompressStream(_Stream):
    """One zstd frame across any number of :meth:`acompress` calls, ended by :meth:`afinish`."""

    def __init__(self, runtime: Runtime, level: int = 3, checksum: bool = False,
                 block: int = DEFAULT_BLOCK, dictionary: Dictionary | None = None) -> None:
        if not abi.LEVEL_MIN <= level <= abi.LEVEL_MAX:
            raise ValueError(f"level must be within {abi.LEVEL_MIN}..{abi.LEVEL_MAX}")
        super().__init__(runtime, abi.QcType.COMPRESS, level, checksum, block, dictionary)

    async def acompress(self, data: Bytes) -> bytes:
        """Compress ``data`` (any size, cut into BDs of ``block``); the frame bytes it flushed."""
        view = memoryview(data).cast("B")
        out = [await self._compress(view[at:at + self.block], False) for at in range(0, len(view), self.block)]
        return b"".join(out)

    async def afinish(self) -> bytes:
        """End the frame: the last block and the checksum, if asked for. The stream is then over."""
        out = await self._compress(memoryview(b""), True)
        self.close()
        return out

    async def _compress(self, chunk: memoryview, finish: bool) -> bytes:
        _status, _consumed, out = await self._bd(chunk, codec.compress_bound(len(chunk)) + FLUSH_SLACK, finish)
        return out


@final
class DecompressStream(_Stream):
    """The content of a zstd stream (one frame or several) fed in pieces of any size. A frame that
    names a dictionary gets it from ``dictionaries`` (its id to the dictionary) when it starts."""

    def __init__(self, runtime: Runtime, block: int = DEFAULT_BLOCK, dictionaries: Resolver | None = None) -> None:
        super().__init__(runtime, abi.QcType.DECOMPRESS, 0, False, block)
        self._resolve = dictionaries
        self._at_frame_end = True
        self._carry = b""  # the start of a frame header cut short by the end of a piece

    async def adecompress(self, data: Bytes) -> AsyncIterator[bytes]:
        """Feed ``data``; yields its output in pieces of at most ``block`` bytes, so a bomb is
        never whole in memory. Raises :class:`JobFailed` (``CORRUPT_INPUT``) on bad input and
        :class:`UnknownDictionary` for a frame naming a dictionary ``dictionaries`` does not have."""
        view = memoryview(self._carry + bytes(data)) if self._carry else memoryview(data).cast("B")
        self._carry = b""
        at = 0
        while at < len(view) or not self._at_frame_end:
            if self._mode & abi.STREAM_NEW and at < len(view) and not self._frame_starts(view[at:]):
                self._carry = bytes(view[at:])  # the header's rest comes with the next piece
                return
            status, consumed, out = await self._bd(view[at:at + self.block], self.block, False)
            at += consumed
            if consumed:
                self._at_frame_end = False
            if status == abi.Status.DECOMP_END:
                self._at_frame_end = True
                self._mode |= abi.STREAM_NEW  # the engine let the context go with the frame
            if out:
                yield out
            if status == abi.Status.OK and at >= len(view):
                return  # the input is used up inside a frame: more must follow

    def _frame_starts(self, rest: memoryview) -> bool:
        """A frame starts at ``rest``: find the dictionary it names (for its first BD); False while
        its header is not whole yet."""
        if codec.header_incomplete(rest):
            return False
        dict_id = codec.frame_dictionary_id(rest)
        found = self._resolve(dict_id) if dict_id and self._resolve is not None else None
        if dict_id and found is None:
            self.close()
            raise UnknownDictionary(dict_id)
        self.dictionary = found
        return True

    async def afinish(self) -> None:
        """The input is complete: fails if it ended inside a frame (truncated)."""
        at_end = self._at_frame_end and not self._carry
        self.close()
        if not at_end:
            raise JobFailed(abi.Status.CORRUPT_INPUT, "the input ended inside a zstd frame")


def _soft_step(context: StreamContext, data: memoryview, capacity: int, finish: bool) -> tuple[int, int, bytes]:
    """One BD on the cpu, in a worker thread: the engine's step over private buffers."""
    src = bytearray(data)
    dst = bytearray(max(capacity, 1))
    source = codec.pointer(src) if src else codec.ffi.NULL
    status, consumed, produced = context.step(codec.pointer(dst), capacity, source, len(src), finish)
    return status, consumed, bytes(dst[:produced])
