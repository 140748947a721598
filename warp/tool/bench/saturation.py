"""The saturation curve of ``warpzip bench device --saturation``: throughput and average latency
against BDs in flight (1, 2, 4, ... to well past the pool size), for each engine pool.

The curve the reference measures on Kunpeng 920 (§3.11: throughput rises with in-flight packages
until ~60, then flattens) is that of a finite set of cores. Here a queue is served by one engine
at a time, so ``k`` BDs in flight are ``k`` queues with one BD each (the least-loaded queue choice
spreads them): throughput rises until every engine of the pool is busy, then only latency grows.
With the device's timing model on (``--bd-latency-us``) the shape is the model's, not the host's.

Each point runs on a fresh runtime with ``k`` queues per direction, for ``--seconds``; compression
points send corpus blocks, decompression points the same blocks compressed once up front.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, final

import zstandard

from warp import Compressor, Decompressor
from warp.device.pool import POOL_NAMES
from warp.dfx import Dfx, Engine
from warp.tool.bench.device import open_runtime
from warp.tool.bench.loops import run_loop
from warp.tool.bench.options import Options
from warp.tool.bench.progress import Progress
from warp.tool.units import MB, NS

#: How far past the pool size the default curve goes: 4 x, the "well past" the flat part needs.
PAST_POOL: Final = 4


@final
@dataclass(frozen=True)
class Point:
    """One point of a pool's curve: ``jobs`` BDs of ``bytes_in`` uncompressed bytes in
    ``wall_ns`` with ``inflight`` in flight, their latencies summing to ``latency_ns``."""

    pool: str
    inflight: int
    jobs: int
    bytes_in: int
    wall_ns: int
    latency_ns: int

    @property
    def jobs_s(self) -> float:
        return self.jobs * NS / self.wall_ns if self.wall_ns > 0 else 0.0

    @property
    def mb_s(self) -> float:
        return self.bytes_in / MB * NS / self.wall_ns if self.wall_ns > 0 else 0.0

    @property
    def latency_us(self) -> float:
        return self.latency_ns / self.jobs / 1000 if self.jobs else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"pool": self.pool, "inflight": self.inflight, "jobs": self.jobs, "mb_s": round(self.mb_s, 3),
                "jobs_s": round(self.jobs_s, 2), "avg_latency_us": round(self.latency_us, 1)}


def default_inflight(pool_size: int, limit: int) -> tuple[int, ...]:
    """1, 2, 4, ... up to :data:`PAST_POOL` x the pool size, and never past ``limit`` (the queues
    a point may open per direction)."""
    top = min(PAST_POOL * pool_size, limit)
    counts = [1]
    while counts[-1] * 2 <= top:
        counts.append(counts[-1] * 2)
    return tuple(counts)


def pool_sizes(dfx: Dfx) -> dict[str, int]:
    """Engines per pool of a running device, from its engine rows' ``POOL`` column."""
    sizes = dict.fromkeys(POOL_NAMES.values(), 0)
    for row in dfx.snapshot().engines:
        sizes["decompress" if row[Engine.POOL] else "compress"] += 1
    return sizes


def measure_curve(root: Path, opts: Options, blocks: Sequence[bytes], sizes: dict[str, int], limit: int,
                  progress: Progress) -> list[Point]:
    """Every pool's curve: a point per in-flight count (``--inflight``, else the default)."""
    frames = [zstandard.ZstdCompressor(level=opts.level).compress(b) for b in blocks]
    used: set[int] = set()
    points: list[Point] = []
    for pool, size in sizes.items():
        for k in opts.inflight or default_inflight(size, limit):
            rt = open_runtime(root, k, True, used)
            try:
                session: Compressor | Decompressor = (rt.compressor(opts.level) if pool == "compress"
                                                      else rt.decompressor(max(map(len, blocks))))
                items = blocks if pool == "compress" else frames
                progress.start(f"saturation {pool} in-flight {k}", opts.seconds)
                points.append(run_loop(opts.loop, functools.partial(_point, session, pool, items, blocks, k,
                                                                    opts.seconds)))
            finally:
                rt.close()
    return points


async def _point(session: Compressor | Decompressor, pool: str, items: Sequence[bytes],
                 blocks: Sequence[bytes], inflight: int, seconds: float) -> Point:
    """``inflight`` workers, each sending the next item and waiting for it, for ``seconds``."""
    clock = time.perf_counter_ns
    start = clock()
    deadline = start + int(seconds * NS)
    cursor = jobs = bytes_in = latency = 0

    async def worker() -> None:
        nonlocal cursor, jobs, bytes_in, latency
        while clock() < deadline:
            i = cursor % len(items)
            cursor += 1
            t0 = clock()
            result = await session.arun(items[i])
            result.release()
            latency += clock() - t0
            jobs += 1
            bytes_in += len(blocks[i])

    await asyncio.gather(*(worker() for _ in range(inflight)))
    return Point(pool=pool, inflight=inflight, jobs=jobs, bytes_in=bytes_in, wall_ns=clock() - start,
                 latency_ns=latency)


def render_curve(points: Sequence[Point], sizes: dict[str, int]) -> str:
    """The curve as a table, a block per pool: in-flight, MB/s, jobs/s, avg latency, and
    throughput against in-flight 1 (the rise, then the flat part)."""
    lines: list[str] = []
    for pool, size in sizes.items():
        mine = [p for p in points if p.pool == pool]
        if not mine:
            continue
        base = mine[0].jobs_s or 1.0
        lines.append(f"{pool} pool ({size} engine{'s' if size != 1 else ''})")
        lines.append(f"  {'in-flight':>9}  {'MB/s':>9}  {'jobs/s':>9}  {'avg lat us':>10}  {'x in-flight 1':>13}")
        for p in mine:
            lines.append(f"  {p.inflight:>9}  {p.mb_s:>9.2f}  {p.jobs_s:>9.1f}  {p.latency_us:>10.0f}"
                         f"  {p.jobs_s / base:>13.2f}")
    return "\n".join(lines)
