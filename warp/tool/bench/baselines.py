"""The two references every ``warpzip bench device`` run measures on this thread, over the same
blocks as the device: bare python-zstandard (the peer) and the engines' own zstd call made inline."""

from __future__ import annotations

import time
from collections.abc import Sequence

import zstandard

from warp import codec
from warp.tool.bench.measurement import Latency, Measurement
from warp.tool.bench.progress import Progress
from warp.tool.units import NS


def measure_peer(blocks: Sequence[bytes], level: int, seconds: float, progress: Progress) -> Measurement:
    """Bare python-zstandard on this thread: the same blocks, round-robin, for ``seconds``."""
    compress = zstandard.ZstdCompressor(level=level).compress
    clock = time.perf_counter_ns
    latencies: list[int] = []
    record = latencies.append
    n = len(blocks)
    jobs = bytes_in = bytes_out = 0
    progress.start("python-zstandard", seconds)
    cpu0 = time.process_time_ns()
    start = clock()
    deadline = start + int(seconds * NS)
    t0 = start
    while t0 < deadline:
        block = blocks[jobs % n]
        out = compress(block)
        t1 = clock()
        record(t1 - t0)
        jobs += 1
        bytes_in += len(block)
        bytes_out += len(out)
        progress.update(jobs, bytes_in)
        t0 = t1
    m = Measurement(label="python-zstandard", jobs=jobs, bytes_in=bytes_in, bytes_out=bytes_out,
                    wall_ns=t0 - start, cpu_ns=time.process_time_ns() - cpu0,
                    latency=Latency.from_ns(latencies), mode="sync", depth=1, samples=tuple(latencies))
    progress.finish(m)
    return m


def measure_inline(blocks: Sequence[bytes], level: int, seconds: float, progress: Progress) -> Measurement:
    """The engines' own zstd call made inline: ``warp.codec.Codec.compress`` (``ZSTD_compress2``
    on a reused context) from each block into one destination of the device's capacity, for
    ``seconds``. Its CPU per job is what a device job would cost if the hand-off were free."""
    worker = codec.Codec()
    size = max(map(len, blocks))
    source = bytearray(b"".join(blocks))
    target = bytearray(codec.compress_bound(size))
    src, dst = codec.pointer(source), codec.pointer(target)
    starts = [0]
    for block in blocks[:-1]:
        starts.append(starts[-1] + len(block))
    lengths = [len(block) for block in blocks]
    compress, capacity, n = worker.compress, len(target), len(blocks)
    clock = time.perf_counter_ns
    latencies: list[int] = []
    record = latencies.append
    jobs = bytes_in = bytes_out = 0
    label = "inline warp.codec"
    progress.start(label, seconds)
    try:
        cpu0 = time.process_time_ns()
        start = clock()
        deadline = start + int(seconds * NS)
        t0 = start
        while t0 < deadline:
            i = jobs % n
            produced = compress(dst, capacity, src + starts[i], lengths[i], level, False)
            t1 = clock()
            record(t1 - t0)
            jobs += 1
            bytes_in += lengths[i]
            bytes_out += produced
            progress.update(jobs, bytes_in)
            t0 = t1
        cpu = time.process_time_ns() - cpu0
    finally:
        codec.release(src)
        codec.release(dst)
    m = Measurement(label=label, jobs=jobs, bytes_in=bytes_in, bytes_out=bytes_out, wall_ns=t0 - start,
                    cpu_ns=cpu, latency=Latency.from_ns(latencies), mode="sync", depth=1, samples=tuple(latencies))
    progress.finish(m)
    return m
