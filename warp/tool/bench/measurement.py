"""What one timed run measured (:class:`Measurement`), its latency summary and the DFX counter
deltas it read, and the arithmetic over them, free of I/O.

Everything here takes plain numbers (byte and job counts, nanosecond timestamps, counter
snapshots) and returns plain numbers, so it is tested without a device. Units: MB is 10^6 bytes
(as ``zstd -b`` and the DESIGN figures), latencies are reported in microseconds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, final

from warp.tool.units import MB, NS


def percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of already sorted values, linearly interpolated between
    closest ranks (numpy's default); ``nan`` for no values."""
    if not 0 <= q <= 100:
        raise ValueError("q must be within 0..100")
    if not ordered:
        return math.nan
    pos = (len(ordered) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@final
@dataclass(frozen=True)
class Latency:
    """Per-job latency summary in microseconds."""

    count: int
    p50_us: float
    p99_us: float
    mean_us: float
    max_us: float

    @classmethod
    def from_ns(cls, samples: Iterable[int]) -> Latency:
        ordered = sorted(samples)
        if not ordered:
            return cls(0, math.nan, math.nan, math.nan, math.nan)
        return cls(count=len(ordered), p50_us=percentile(ordered, 50) / 1e3, p99_us=percentile(ordered, 99) / 1e3,
                   mean_us=sum(ordered) / len(ordered) / 1e3, max_us=ordered[-1] / 1e3)


@final
@dataclass(frozen=True)
class DeviceCounters:
    """A snapshot of the DFX counters a run reads, or the difference of two snapshots.

    ``iopf`` and ``queue_jobs`` are summed over the benchmark's own queues (per-queue counters,
    so another process on a shared device does not count); ``fault_pages`` is device-wide (the
    fault handler's pages made present) and so are the engine rows.
    """

    iopf: int = 0
    queue_jobs: int = 0
    fault_pages: int = 0
    engine_busy_ns: tuple[int, ...] = ()
    engine_jobs: tuple[int, ...] = ()
    batches: int = 0  # engine turns on the run's queues (per-queue BATCHES)
    interrupts: int = 0  # interrupts raised to the run's queues
    doorbells: int = 0  # SQ doorbell kicks that woke an engine

    def __add__(self, other: DeviceCounters) -> DeviceCounters:
        """Two runs' deltas together (for repeated runs)."""
        return self._combine(other, 1, "deltas of different devices")

    def __sub__(self, before: DeviceCounters) -> DeviceCounters:
        return self._combine(before, -1, "snapshots of different devices")

    def _combine(self, other: DeviceCounters, sign: int, mismatch: str) -> DeviceCounters:
        if len(self.engine_busy_ns) != len(other.engine_busy_ns):
            raise ValueError(mismatch)
        values: dict[str, Any] = {}
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            values[f.name] = (tuple(x + sign * y for x, y in zip(a, b, strict=True)) if isinstance(a, tuple)
                              else a + sign * b)
        return DeviceCounters(**values)

    @property
    def engines(self) -> int:
        return len(self.engine_busy_ns)


@final
@dataclass(frozen=True)
class Measurement:
    """One timed run: the bare peer, or the device under one configuration.

    ``wall_ns`` runs from the first job's start to the last job's end; ``cpu_ns`` is this
    process's CPU time over the same span (``uadk_tool``'s CPU_rate numerator).
    """

    label: str
    jobs: int
    bytes_in: int
    bytes_out: int
    wall_ns: int
    cpu_ns: int
    latency: Latency
    errors: int = 0
    mode: str = "sync"
    depth: int = 1
    prefault: bool | None = None
    counters: DeviceCounters | None = None  # device runs only: the delta over the run
    extra: dict[str, Any] = field(default_factory=dict)
    samples: tuple[int, ...] = field(default=(), repr=False, compare=False)  # raw latencies (ns), for merge
    parts: tuple[float, ...] = ()  # MB/s of each repeat when this merges several runs
    device_cpu_ns: int | None = None  # device runs: the device process's user + system time over the run

    @property
    def seconds(self) -> float:
        return self.wall_ns / NS

    @property
    def mb_s(self) -> float:
        """Input MB/s (uadk_tool's ``perf`` is the same quantity in KiB/s)."""
        return self.bytes_in / self.seconds / MB if self.wall_ns > 0 else 0.0

    @property
    def jobs_s(self) -> float:
        return self.jobs / self.seconds if self.wall_ns > 0 else 0.0

    @property
    def ratio(self) -> float:
        """Compression ratio, input / output (uadk_tool prints the inverse as "compress data rate")."""
        return self.bytes_in / self.bytes_out if self.bytes_out else math.nan

    @property
    def cpu_rate(self) -> float:
        """This process's CPU time / wall time (1.0 = one core busy)."""
        return self.cpu_ns / self.wall_ns if self.wall_ns > 0 else 0.0

    @property
    def engines(self) -> int | None:
        return self.counters.engines if self.counters is not None else None

    @property
    def iopf_per_job(self) -> float | None:
        if self.counters is None:
            return None
        return self.counters.iopf / self.jobs if self.jobs else math.nan

    @property
    def busy_ratio(self) -> float | None:
        """Mean engine busy time / wall time: 1.0 means every engine compressed all the time."""
        if self.counters is None or not self.counters.engines or self.wall_ns <= 0:
            return None
        return sum(self.counters.engine_busy_ns) / (self.wall_ns * self.counters.engines)

    @property
    def mb_s_per_engine(self) -> float:
        engines = self.engines or 1
        return self.mb_s / engines

    def vs(self, peer: Measurement) -> float:
        """The headline: MB/s per engine over the bare peer's MB/s."""
        return self.mb_s_per_engine / peer.mb_s if peer.mb_s > 0 else math.nan

    @property
    def cpu_us_per_job(self) -> float:
        """CPU µs per job of whoever ran the zstd calls: the device process for a device run (all
        its threads: engines, doorbells, interrupts, faults), this process for the peers."""
        cpu = self.device_cpu_ns if self.device_cpu_ns is not None else self.cpu_ns
        return cpu / self.jobs / 1e3 if self.jobs else math.nan

    def cpu_vs(self, inline: Measurement) -> float:
        """CPU per job over the same zstd call made inline: what the device's hand-off costs."""
        base = inline.cpu_us_per_job
        return self.cpu_us_per_job / base if base > 0 else math.nan


def merge(runs: Sequence[Measurement]) -> Measurement:
    """Repeats of one configuration as one measurement: counts, times and counter deltas summed,
    latency percentiles over every job's sample; ``parts`` keeps each repeat's MB/s (the spread).
    Integer extras are summed, boolean ones must all hold, dicts of counts are added up."""
    if not runs:
        raise ValueError("no runs")
    if len(runs) == 1:
        return runs[0]
    first = runs[0]
    samples = tuple(ns for m in runs for ns in m.samples)
    device_cpu = [m.device_cpu_ns for m in runs]
    return Measurement(
        label=first.label, jobs=sum(m.jobs for m in runs), bytes_in=sum(m.bytes_in for m in runs),
        bytes_out=sum(m.bytes_out for m in runs), wall_ns=sum(m.wall_ns for m in runs),
        cpu_ns=sum(m.cpu_ns for m in runs), latency=Latency.from_ns(samples), errors=sum(m.errors for m in runs),
        mode=first.mode, depth=first.depth, prefault=first.prefault, counters=_merge_counters(runs),
        extra=_merge_extra(runs), samples=samples, parts=tuple(m.mb_s for m in runs),
        device_cpu_ns=None if None in device_cpu else sum(ns or 0 for ns in device_cpu))


def _merge_counters(runs: Sequence[Measurement]) -> DeviceCounters | None:
    """The counter deltas of device runs summed; ``None`` for peer runs; mixing them is an error."""
    counters = runs[0].counters
    if counters is None:
        return None
    for m in runs[1:]:
        if m.counters is None:
            raise ValueError("cannot merge device and peer runs")
        counters = counters + m.counters
    return counters


def _merge_extra(runs: Sequence[Measurement]) -> dict[str, Any]:
    """The first run's extras, each combined over all runs by its type (see :func:`merge`)."""
    extra: dict[str, Any] = {}
    for key, value in runs[0].extra.items():
        values = [m.extra.get(key) for m in runs]
        if isinstance(value, bool) or value is None:
            extra[key] = None if any(v is None for v in values) else all(values)
        elif isinstance(value, int):
            extra[key] = sum(int(v or 0) for v in values)
        elif isinstance(value, dict):
            total: dict[str, int] = {}
            for v in values:
                for k, n in (v or {}).items():
                    total[k] = total.get(k, 0) + n
            extra[key] = total
        else:
            extra[key] = value
    return extra


def best(runs: Sequence[Measurement]) -> Measurement:
    """The zstd device run with the highest MB/s per engine (the headline run; lz77_zstd runs,
    marked by their ``algorithm``, are a comparison beside it)."""
    zstd = [m for m in runs if "algorithm" not in m.extra]
    if not zstd:
        raise ValueError("no runs")
    return max(zstd, key=lambda m: m.mb_s_per_engine)
