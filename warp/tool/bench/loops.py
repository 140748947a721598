"""The device loops of ``warpzip bench device``: ``--sync``, ``--batch`` and ``--async`` jobs for
``--seconds``, each counted into a :class:`Tally`. Each returns the first job's start and the last
job's end (``perf_counter_ns``), the span its throughput is measured over."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from warp import Compressor, JobFailed, Runtime
from warp.tool.bench.progress import Progress
from warp.tool.units import NS

T = TypeVar("T")


@dataclass
class Tally:
    """What a device loop counted: jobs, failures by engine status, bytes, per-job latencies (ns)
    and the first job's frame, which the run decompresses to verify."""

    jobs: int = 0
    errors: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    latencies: list[int] = field(default_factory=list)
    first_frame: bytes | None = None
    statuses: dict[str, int] = field(default_factory=dict)

    def failed(self, exc: JobFailed) -> None:
        self.errors += 1
        key = f"0x{exc.status:02x}"
        self.statuses[key] = self.statuses.get(key, 0) + 1


def sync_loop(comp: Compressor, blocks: Sequence[bytes], seconds: float, tally: Tally,
              progress: Progress) -> tuple[int, int]:
    """One job at a time through ``Compressor.compress``, round-robin over the blocks."""
    clock = time.perf_counter_ns
    n = len(blocks)
    record = tally.latencies.append
    start = clock()
    deadline = start + int(seconds * NS)
    t0 = start
    i = 0
    while t0 < deadline:
        block = blocks[i % n]
        i += 1
        try:
            with comp.compress(block) as result:
                produced = len(result)
                if tally.first_frame is None:
                    tally.first_frame = result.tobytes()
        except JobFailed as exc:
            tally.failed(exc)
            t0 = clock()
            continue
        t1 = clock()
        record(t1 - t0)
        tally.jobs += 1
        tally.bytes_in += len(block)
        tally.bytes_out += produced
        progress.update(tally.jobs, tally.bytes_in)
        t0 = t1
    return start, t0


def batch_loop(comp: Compressor, blocks: Sequence[bytes], depth: int, seconds: float, tally: Tally,
               progress: Progress) -> tuple[int, int]:
    """``depth`` consecutive blocks per ``compress_many`` call; each job's latency is its batch's."""
    clock = time.perf_counter_ns
    n = len(blocks)
    start = clock()
    deadline = start + int(seconds * NS)
    t0 = start
    i = 0
    while t0 < deadline:
        batch = [blocks[(i + k) % n] for k in range(depth)]
        first = i == 0
        i += depth
        try:
            results = comp.compress_many(batch)
        except JobFailed as exc:
            tally.failed(exc)
            t0 = clock()
            continue
        t1 = clock()
        for block, result in zip(batch, results, strict=True):
            with result:
                tally.bytes_out += len(result)
                if first and tally.first_frame is None:
                    tally.first_frame = result.tobytes()
            tally.bytes_in += len(block)
        tally.jobs += depth
        tally.latencies.extend([t1 - t0] * depth)
        progress.update(tally.jobs, tally.bytes_in)
        t0 = t1
    return start, t0


async def async_loop(rt: Runtime, comp: Compressor, blocks: Sequence[bytes], depth: int, seconds: float,
                     tally: Tally, progress: Progress) -> tuple[int, int]:
    """``depth`` workers on one loop, each: take the next block, copy it into a pooled SVA
    buffer, ``acompress_buffer`` it, release the result. Together they keep ``depth`` in flight."""
    clock = time.perf_counter_ns
    n = len(blocks)
    record = tally.latencies.append
    cursor = 0
    start = clock()
    deadline = start + int(seconds * NS)

    async def worker() -> None:
        nonlocal cursor
        while clock() < deadline:
            i = cursor
            cursor += 1
            block = blocks[i % n]
            t0 = clock()
            src = rt.alloc(len(block))
            try:
                src.write(0, block)
            except BaseException:
                src.release()
                raise
            try:
                result = await comp.acompress_buffer(src, len(block))
            except JobFailed as exc:
                tally.failed(exc)
                continue
            with result:
                produced = len(result)
                if i == 0:
                    tally.first_frame = result.tobytes()
            record(clock() - t0)
            tally.jobs += 1
            tally.bytes_in += len(block)
            tally.bytes_out += produced
            progress.update(tally.jobs, tally.bytes_in)

    await asyncio.gather(*(worker() for _ in range(depth)))
    return start, clock()


def run_loop(loop: str, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """``main()`` to completion on a fresh ``uvloop`` or ``asyncio`` event loop."""
    if loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main())
    return asyncio.run(main())
