"""The ``cpu`` driver: software zstd in a thread pool, on the same SVA buffers.

It is the fallback when the device is absent, isolated or dead, and the baseline the device is
measured against. Jobs run the same :meth:`warp.codec.Codec.run` as the device's engines, so both
drivers produce identical frames and statuses.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, final

import numpy as np

from warp import abi, codec, lz77
from warp.dictcache import LoadedDictionaries
from warp.dictionary import Dictionary
from warp.drv.base import DriverStats, Job
from warp.errors import JobTimeout
from warp.sva import AddressSpace


@final
class CpuDriver:
    name = "cpu"

    def __init__(self, space: AddressSpace, threads: int = 2) -> None:
        self._memory = codec.pointer(space.view)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="warp-cpu")
        self._local = threading.local()
        self._threads = threads
        self._lock = threading.Lock()
        self._inflight = self.submitted = self.completed = self.failed = 0

    @property
    def alive(self) -> bool:
        return True

    def submit(self, job: Job) -> asyncio.Future[Job]:
        loop = asyncio.get_running_loop()
        job.future = loop.create_future()
        self._count_submit()
        done = loop.run_in_executor(self._pool, self._execute, job)
        done.add_done_callback(lambda f: self._complete(job, f))
        return job.future

    def submit_many(self, jobs: list[Job]) -> None:
        for job in jobs:
            self.submit(job)

    def run(self, jobs: list[Job], timeout: float) -> None:
        for _ in jobs:
            self._count_submit()
        futures = [self._pool.submit(self._execute, job) for job in jobs]
        for job, future in zip(jobs, futures, strict=True):
            try:
                status, produced = future.result(timeout)
            except TimeoutError:
                job.abandon()
                raise JobTimeout(f"cpu job still running after {timeout} s") from None
            self._finish(job, status, produced)

    def _count_submit(self) -> None:
        with self._lock:
            self._inflight += 1
            self.submitted += 1

    def _execute(self, job: Job) -> tuple[abi.Status, int]:
        worker: codec.Codec | None = getattr(self._local, "codec", None)
        if worker is None:
            worker = self._local.codec = codec.Codec()
            self._local.dictionaries = LoadedDictionaries()
        base = job.src.heap.space.base
        memory = self._memory
        if job.algorithm is not abi.Alg.ZSTD:
            return self._lz77_bd(memory + (job.src.address - base), job)
        loaded = None if job.dictionary is None else self._loaded(job, job.dictionary)
        return worker.run(job.direction, memory + (job.dst.address - base), job.dst.capacity,
                          memory + (job.src.address - base), job.length, job.level, job.checksum, loaded)

    def _loaded(self, job: Job, d: Dictionary) -> Any:
        """The job's dictionary, kept per thread as the engines keep theirs: failover does not
        digest it per job."""
        level = job.level if job.direction is abi.QcType.COMPRESS else 0
        return self._local.dictionaries.get((d.address, d.length, d.dict_id, job.direction, level),
                                            lambda: codec.load_dictionary(d.view, job.direction, level))

    def _lz77_bd(self, src: codec.Pointer, job: Job) -> tuple[abi.Status, int]:
        """An lz77_zstd BD: the engine's checks and pass (:mod:`warp.lz77`), written into the job's
        flat destination; ``(status, sequences)``, the literal count and dw31 into the job."""
        lits_size = lz77.literal_size(job.length)
        refused = lz77.refusal(job.algorithm, job.length, job.level, job.window, lits_size)
        if refused is not None:
            return refused, 0
        done = lz77.this_thread().run(src, np.frombuffer(job.src.view, np.uint8, job.length), job.level, job.window)
        out = np.frombuffer(job.dst.view, np.uint8)
        if lits_size + len(done.area) > len(out):
            return abi.Status.DST_TOO_SMALL, 0
        out[:len(done.literals)] = done.literals
        out[lits_size:lits_size + len(done.area)] = done.area
        job.literals, job.overflow = len(done.literals), done.overflow
        return abi.Status.OK, done.sequences

    def _complete(self, job: Job, done: asyncio.Future[tuple[abi.Status, int]]) -> None:
        if done.cancelled():
            return
        status, produced = done.result()
        self._finish(job, status, produced)

    def _finish(self, job: Job, status: int, produced: int) -> None:
        with self._lock:
            self._inflight -= 1
            self.completed += 1
            self.failed += status != abi.Status.OK
        job.finish(status, produced)

    def statistics(self) -> DriverStats:
        with self._lock:
            return DriverStats(name=self.name, alive=True, device=None, queues=self._threads, sq_depth=self._inflight,
                               sq_capacity=self._threads, submitted=self.submitted, completed=self.completed,
                               failed=self.failed, doorbells=0)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        codec.release(self._memory)
