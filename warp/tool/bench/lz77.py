"""``warpzip bench device --compare-lz77``: the same blocks through lz77_zstd, next to zstd.

The device runs only the LZ77 pass of each ≤ 128 KiB BD; this process builds the frame, so the run
reports the software stage's CPU (``software_stage_cpu_ns``, also per job and as a share of the
run's host CPU) besides MB/s and ratio. ``--sync`` compresses one block at a time; the other
modes keep ``depth`` blocks in flight with ``acompress`` (a block is one frame either way).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import zstandard

from warp import JobFailed, abi
from warp.session import Lz77Compressor
from warp.tool.bench.device import device_label, fresh_run
from warp.tool.bench.loops import Tally, run_loop
from warp.tool.bench.measurement import Latency, Measurement
from warp.tool.bench.options import Options
from warp.tool.bench.progress import Progress
from warp.tool.units import NS

ALGORITHM: Final = "lz77_zstd"


def measure_lz77(root: Path, opts: Options, blocks: Sequence[bytes], depth: int, progress: Progress,
                 used_pasids: set[int], pid: int) -> Measurement:
    """One lz77_zstd run on a fresh runtime, measured as :func:`measure_device` measures zstd."""
    with fresh_run(root, opts, True, used_pasids, pid) as run:
        comp = run.rt.compressor(opts.level, False, ALGORITHM)
        label = f"{ALGORITHM} " + device_label(opts.mode, depth, True)
        tally = Tally()
        progress.start(label, opts.seconds)
        run.begin()
        if opts.mode == "sync":
            start, end = _sync(comp, blocks, opts.seconds, tally, progress)
        else:
            start, end = run_loop(opts.loop, lambda: _async(comp, blocks, depth, opts.seconds, tally, progress))
        cpu = run.cpu_ns()
        counters = run.counters(tally.jobs * -(-opts.block_size // abi.ZSTD_MAX_SIZE))  # BDs
        extra: dict[str, Any] = {
            "algorithm": ALGORITHM, "fallback_jobs": run.rt.statistics().fallback_jobs,
            "software_stage_cpu_ns": comp.stage_cpu_ns,
            "software_stage_cpu_us_per_job": comp.stage_cpu_ns / 1000 / tally.jobs if tally.jobs else None,
            "software_stage_cpu_share": comp.stage_cpu_ns / cpu if cpu else None,
            "verified": tally.first_frame is not None, "error_statuses": tally.statuses,
        }
        m = Measurement(label=label, jobs=tally.jobs, bytes_in=tally.bytes_in, bytes_out=tally.bytes_out,
                        wall_ns=end - start, cpu_ns=cpu, latency=Latency.from_ns(tally.latencies),
                        samples=tuple(tally.latencies), errors=tally.errors, mode=opts.mode, depth=depth,
                        prefault=True, counters=counters, extra=extra, device_cpu_ns=run.device_cpu_ns())
        progress.finish(m)
        return m


def _count(tally: Tally, progress: Progress, block: bytes, frame: bytes, latency: int) -> None:
    """One block done; the first frame is kept only if it decodes back to its block."""
    if tally.first_frame is None and zstandard.ZstdDecompressor().decompress(frame) == block:
        tally.first_frame = frame
    tally.latencies.append(latency)
    tally.jobs += 1
    tally.bytes_in += len(block)
    tally.bytes_out += len(frame)
    progress.update(tally.jobs, tally.bytes_in)


def _sync(comp: Lz77Compressor, blocks: Sequence[bytes], seconds: float, tally: Tally,
          progress: Progress) -> tuple[int, int]:
    clock = time.perf_counter_ns
    start = t0 = clock()
    deadline = start + int(seconds * NS)
    i = 0
    while t0 < deadline:
        block = blocks[i % len(blocks)]
        i += 1
        try:
            frame = comp.compress(block)
        except JobFailed as exc:
            tally.failed(exc)
            t0 = clock()
            continue
        t1 = clock()
        _count(tally, progress, block, frame, t1 - t0)
        t0 = t1
    return start, t0


async def _async(comp: Lz77Compressor, blocks: Sequence[bytes], depth: int, seconds: float, tally: Tally,
                 progress: Progress) -> tuple[int, int]:
    clock = time.perf_counter_ns
    start = clock()
    deadline = start + int(seconds * NS)
    cursor = 0

    async def worker() -> None:
        nonlocal cursor
        while clock() < deadline:
            block = blocks[cursor % len(blocks)]
            cursor += 1
            t0 = clock()
            try:
                frame = await comp.acompress(block)
            except JobFailed as exc:
                tally.failed(exc)
                continue
            _count(tally, progress, block, frame, clock() - t0)

    await asyncio.gather(*(worker() for _ in range(depth)))
    return start, clock()
