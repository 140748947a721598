"""Sessions: what applications call. ``Compressor``/``Decompressor`` are sessions with their
parameters, created by a :class:`~warp.runtime.Runtime`: sync, async, and batches
(``compress_many``: N jobs written together under one doorbell). Each turns its input into a
:class:`~warp.drv.base.Job` and hands it to the runtime, which picks the driver and fails over.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, final

from warp import abi, codec
from warp.dictionary import Dictionary, Resolver
from warp.drv.base import Job
from warp.errors import JobFailed, UnknownDictionary
from warp.mem import Buffer

if TYPE_CHECKING:
    from warp.runtime import Done, Result, Runtime

Bytes = bytes | bytearray | memoryview


class _Session:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

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
        jobs: list[Job] = []
        try:
            for data in items:
                jobs.append(self._adopt(self.runtime.load(data), len(data)))
        except BaseException:
            for job in jobs:
                job.discard()
            raise
        return jobs

    def _adopt(self, src: Buffer, length: int) -> Job:
        try:
            return self._job(src, length)
        except BaseException:
            src.release()
            raise


@final
class Compressor(_Session):
    """Compress to one zstd frame with the content size in its header (and the id of the
    ``dictionary`` it was compressed with, if any)."""

    def __init__(self, runtime: Runtime, level: int = 3, checksum: bool = False,
                 dictionary: Dictionary | None = None) -> None:
        if not abi.LEVEL_MIN <= level <= abi.LEVEL_MAX:
            raise ValueError(f"level must be within {abi.LEVEL_MIN}..{abi.LEVEL_MAX}")
        super().__init__(runtime)
        self.level = level
        self.checksum = checksum
        self.dictionary = dictionary

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
class Decompressor(_Session):
    """Decompress zstd frames; output beyond ``max_output`` fails instead of growing (bomb-proof).
    A frame that names a dictionary gets it from ``dictionaries`` (its id to the dictionary)."""

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

    def _dictionary(self, frame: memoryview) -> Dictionary | None:
        """The dictionary the first frame names, or :class:`UnknownDictionary` before any job runs
        (the engine would only say "corrupt")."""
        dict_id = codec.frame_dictionary_id(frame)
        if not dict_id:
            return None
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
