"""Sessions: what applications call. ``Compressor``/``Decompressor`` are sessions with their
parameters, created by a :class:`~warp.runtime.Runtime`: sync, async, and batches
(``compress_many``: N jobs written together under one doorbell). Each turns its input into a
:class:`~warp.drv.base.Job` and hands it to the runtime, which picks the driver and fails over.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Final, final

from warp import abi, codec, lz77
from warp.dictionary import Dictionary, Resolver
from warp.drv.base import Job
from warp.errors import JobFailed, MixedDictionaries, UnknownDictionary
from warp.mem import Buffer

if TYPE_CHECKING:
    from warp.result import Result
    from warp.runtime import Done, Runtime

Bytes = bytes | bytearray | memoryview


class _Session:
    direction: abi.QcType

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        #: The ctx this session was given at creation (per-session scheduling), else None.
        self.key = runtime.scheduler.assign(self.direction, runtime.queue_count)

    def _job(self, src: Buffer, length: int) -> Job:
        raise NotImplementedError

    def run(self, data: Bytes) -> Result:
        """Synchronous: copy in, submit, wait (bounded busy-poll, then sleep on the interrupt)."""
        src = self.runtime.load(data)
        return self.runtime.execute_sync(self._adopt(src, len(data)))

    async def arun(self, data: Bytes) -> Result:
        """Asynchronous: copy in and await the job (jobs of one loop tick share a doorbell)."""
        src = self.runtime.load(data)
        return await self.runtime.execute(self._adopt(src, len(data)))

    async def arun_buffer(self, src: Buffer, length: int) -> Result:
        """Zero-copy: ``src`` already holds the input in the SVA heap; the session takes it over."""
        return await self.runtime.execute(self._adopt(src, length))

    def submit_buffer(self, src: Buffer, length: int, done: Done) -> Job:
        """:meth:`arun_buffer` without a task (:meth:`Runtime.submit`): ``done`` gets the outcome.
        Returns the job, for ``abandon()`` by a caller that stops waiting."""
        job = self._adopt(src, length)
        self.runtime.submit(job, done)
        return job

    def run_many(self, items: Sequence[Bytes]) -> list[Result]:
        """A batch: every input copied in, all jobs under one doorbell, results in order."""
        return self.runtime.execute_many_sync(self._load_all(items))

    async def arun_many(self, items: Sequence[Bytes]) -> list[Result]:
        """:meth:`run_many` from an event loop."""
        return await self.runtime.execute_many(self._load_all(items))

    def _load_all(self, items: Sequence[Bytes]) -> list[Job]:
        return self._adopt_all((self.runtime.load(data), len(data)) for data in items)

    def _adopt_all(self, inputs: Iterable[tuple[Buffer, int]]) -> list[Job]:
        """A job per ``(buffer, length)``, taken as they come; if one fails, those made are
        discarded (their buffers freed) before the error goes up."""
        jobs: list[Job] = []
        try:
            for src, length in inputs:
                jobs.append(self._adopt(src, length))
        except BaseException:
            for job in jobs:
                job.discard()
            raise
        return jobs

    def _adopt(self, src: Buffer, length: int) -> Job:
        try:
            job = self._job(src, length)
            job.key = self.key
            return job
        except BaseException:
            src.release()
            raise


class _Compressing(_Session):
    """A compression session's parameters: a zstd level (checked) and the content checksum."""

    direction = abi.QcType.COMPRESS

    def __init__(self, runtime: Runtime, level: int = 3, checksum: bool = False,
                 dictionary: Dictionary | None = None) -> None:
        if not abi.LEVEL_MIN <= level <= abi.LEVEL_MAX:
            raise ValueError(f"level must be within {abi.LEVEL_MIN}..{abi.LEVEL_MAX}")
        super().__init__(runtime)
        self.level = level
        self.checksum = checksum
        self.dictionary = dictionary


@final
class Compressor(_Compressing):
    """Compress to one zstd frame with the content size in its header."""

    def _job(self, src: Buffer, length: int) -> Job:
        dst = self.runtime.alloc(codec.compress_bound(length))
        return Job(direction=abi.QcType.COMPRESS, src=src, length=length, dst=dst, level=self.level,
                   checksum=self.checksum, dictionary=self.dictionary)

    def compress(self, data: Bytes) -> Result:
        """``data`` as one frame, synchronously (:meth:`run`)."""
        return self.run(data)

    async def acompress(self, data: Bytes) -> Result:
        """``data`` as one frame, from an event loop (:meth:`arun`)."""
        return await self.arun(data)

    async def acompress_buffer(self, src: Buffer, length: int) -> Result:
        """``src[:length]``, already in the SVA heap, as one frame (:meth:`arun_buffer`)."""
        return await self.arun_buffer(src, length)

    def compress_many(self, items: Sequence[Bytes]) -> list[Result]:
        """A frame per item, under one doorbell (:meth:`run_many`)."""
        return self.run_many(items)

    async def acompress_many(self, items: Sequence[Bytes]) -> list[Result]:
        """A frame per item, under one doorbell, from an event loop (:meth:`arun_many`)."""
        return await self.arun_many(items)


@final
class Lz77Compressor(_Compressing):
    """lz77_zstd (:mod:`warp.lz77`): the input cut into BDs of at most 128 KiB, the LZ77 pass of
    each on the device (or the cpu), and one zstd frame built by software zstd from their literals
    and sequences. ``level`` is a zstd level, mapped to ZIP's L8/L9 and window as KAEZstd maps it.

    A BD the device lets down is re-run on the cpu like any job; the pass is the same native call
    there, so the frame is the one the device would have given. The frame is this process's
    output, not a device buffer, so it comes back as ``bytes``.
    """

    def __init__(self, runtime: Runtime, level: int = 3, checksum: bool = False) -> None:
        super().__init__(runtime, level, checksum)
        self.hw_level, self.window = lz77.hw_params(level)
        #: CPU time (thread time, ns) this session's software stage spent building frames: what the
        #: host pays for the entropy coding the device leaves to it (``warpzip bench device``).
        self.stage_cpu_ns = 0

    def _job(self, src: Buffer, length: int) -> Job:
        dst = self.runtime.alloc(lz77.output_size(length))
        return Job(direction=abi.QcType.COMPRESS, src=src, length=length, dst=dst, level=self.hw_level,
                   algorithm=lz77.ALGORITHM[self.hw_level], window=self.window)

    def compress(self, data: Bytes) -> bytes:
        """``data`` as one frame, synchronously: every BD under one doorbell."""
        jobs = self._load_all(_bds(data))
        return self._frame(jobs, self.runtime.execute_many_sync(jobs), data)

    async def acompress(self, data: Bytes) -> bytes:
        """``data`` as one frame, from an event loop; the software stage runs in a thread."""
        jobs = self._load_all(_bds(data))
        results = await self.runtime.execute_many(jobs)
        return await asyncio.to_thread(self._frame, jobs, results, data)

    async def acompress_buffer(self, src: Buffer, length: int) -> bytes:
        """``src[:length]``, already in the SVA heap, as one frame: each BD is a window of ``src``
        (no copy, as a split job's), and the software stage reads the source there too. The
        session takes ``src`` over and frees it once the frame is built or the jobs failed — or the
        caller was cancelled, when an abandoned BD may still be running: its engine only reads the
        window, so the buffer's next owner is never written to, and that BD's own destination stays
        with its job until the engine lets go."""
        try:
            jobs = self._adopt_all((src.borrow(at, piece), piece) for at, piece in lz77.bds(length))
            results = await self.runtime.execute_many(jobs)
            return await asyncio.to_thread(self._frame, jobs, results, src.view[:length])
        finally:
            src.release()

    def _frame(self, jobs: list[Job], results: list[Result], data: Bytes) -> bytes:
        """The software stage over the BDs' outputs (each job's ``dst``: its result's buffer)."""
        started = time.thread_time_ns()
        try:
            blocks = [lz77.Block(job.dst.view, job.length, job.literals, job.produced, job.overflow) for job in jobs]
            return lz77.frame(blocks, data, self.checksum)
        finally:
            for result in results:
                result.release()
            self.stage_cpu_ns += time.thread_time_ns() - started


#: ``Runtime.compressor``'s algorithms (the device's ``algorithms`` lines).
ALGORITHMS: Final = ("zstd", "lz77_zstd")


AnyCompressor = Compressor | Lz77Compressor


def make_compressor(runtime: Runtime, level: int, checksum: bool, algorithm: str,
                    dictionary: Dictionary | None = None) -> AnyCompressor:
    """A compression session of ``algorithm`` (one of :data:`ALGORITHMS`); a dictionary is zstd's."""
    if algorithm == "lz77_zstd" and dictionary is None:
        return Lz77Compressor(runtime, level, checksum)
    if algorithm != "zstd":
        raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}, and a dictionary needs zstd")
    return Compressor(runtime, level, checksum, dictionary)


def _bds(data: Bytes) -> list[memoryview]:
    """``data`` cut into its BDs (:func:`warp.lz77.bds`)."""
    view = memoryview(data).cast("B")
    return [view[at:at + piece] for at, piece in lz77.bds(len(view))]


@final
class Decompressor(_Session):
    """Decompress zstd frames; output beyond ``max_output`` fails instead of growing (bomb-proof).
    A frame that names a dictionary gets it from ``dictionaries`` (its id to the dictionary)."""

    direction = abi.QcType.DECOMPRESS

    def __init__(self, runtime: Runtime, max_output: int, dictionaries: Resolver | None = None) -> None:
        super().__init__(runtime)
        self.max_output = max_output
        self.dictionaries = dictionaries

    def _job(self, src: Buffer, length: int) -> Job:
        """Size the output from the frame headers; a declared size over the limit fails at once,
        so a bomb never gets its output allocated. Without a declared size the limit is the cap,
        and the engine stops at it (dst too small) instead of writing past."""
        declared = codec.decompressed_size(src.view[:length])
        if declared is not None and declared > self.max_output:
            raise JobFailed(abi.Status.DST_TOO_SMALL, f"frame declares {declared} bytes, over {self.max_output}")
        dictionary = self._dictionary(src.view[:length])
        dst = self.runtime.alloc(declared if declared is not None else self.max_output)
        return Job(direction=abi.QcType.DECOMPRESS, src=src, length=length, dst=dst, dictionary=dictionary)

    def _dictionary(self, frames: memoryview) -> Dictionary | None:
        """The one dictionary the frames name (a frame naming none decodes beside it), or, before
        any job runs, :class:`UnknownDictionary` / :class:`MixedDictionaries` (the engine would only
        say "corrupt")."""
        named = codec.dictionary_ids(frames)
        if not named:
            return None
        if len(named) > 1:
            raise MixedDictionaries(named)
        dict_id = named[0]
        found = self.dictionaries(dict_id) if self.dictionaries is not None else None
        if found is None:
            raise UnknownDictionary(dict_id)
        return found

    def decompress(self, data: Bytes) -> Result:
        """The frames in ``data``, decompressed synchronously (:meth:`run`)."""
        return self.run(data)

    async def adecompress(self, data: Bytes) -> Result:
        """The frames in ``data``, decompressed from an event loop (:meth:`arun`)."""
        return await self.arun(data)

    async def adecompress_buffer(self, src: Buffer, length: int) -> Result:
        """The frames in ``src[:length]``, already in the SVA heap (:meth:`arun_buffer`)."""
        return await self.arun_buffer(src, length)

    def decompress_many(self, items: Sequence[Bytes]) -> list[Result]:
        """Each item's frames, under one doorbell (:meth:`run_many`)."""
        return self.run_many(items)

    async def adecompress_many(self, items: Sequence[Bytes]) -> list[Result]:
        """Each item's frames, under one doorbell, from an event loop (:meth:`arun_many`)."""
        return await self.arun_many(items)
