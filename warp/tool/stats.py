"""The arithmetic and rendering of ``warpzip bench device``, free of I/O.

Everything here takes plain numbers (byte and job counts, nanosecond timestamps, counter
snapshots) and returns plain numbers or strings, so it is tested without a device. Units: MB is
10^6 bytes (as ``zstd -b`` and the DESIGN figures), latencies are reported in microseconds.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Final, final

MB: Final = 1_000_000
NS: Final = 1_000_000_000

_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]?)(?:i?b)?\s*$", re.IGNORECASE)
_UNITS: Final = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_size(text: str) -> int:
    """``4k``, ``64KiB``, ``1m``, ``65536`` → bytes (binary units, as ``uadk_tool --pktlen`` sizes)."""
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"not a size: {text!r} (try 4k, 64k, 1m or a byte count)")
    size = int(match.group(1)) * _UNITS[match.group(2).lower()]
    if size < 1:
        raise ValueError("a block must hold at least one byte")
    return size


def human_size(size: int) -> str:
    """``64 KiB``, ``1 MiB``, ``1000 B``."""
    for shift, name in ((30, "GiB"), (20, "MiB"), (10, "KiB")):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift} {name}"
    return f"{size} B"


def parse_depths(text: str) -> list[int]:
    """``1,2,4,8`` → ``[1, 2, 4, 8]``: positive, duplicates dropped, order kept."""
    try:
        depths = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"not a list of depths: {text!r} (try 1,2,4,8,16,32)") from None
    if not depths or min(depths) < 1:
        raise ValueError("depths must be positive integers")
    return list(dict.fromkeys(depths))


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
    counters = None
    if first.counters is not None:
        counters = first.counters
        for m in runs[1:]:
            if m.counters is None:
                raise ValueError("cannot merge device and peer runs")
            counters = counters + m.counters
    extra: dict[str, Any] = {}
    for key, value in first.extra.items():
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
    samples = tuple(ns for m in runs for ns in m.samples)
    device_cpu = [m.device_cpu_ns for m in runs]
    return Measurement(
        label=first.label, jobs=sum(m.jobs for m in runs), bytes_in=sum(m.bytes_in for m in runs),
        bytes_out=sum(m.bytes_out for m in runs), wall_ns=sum(m.wall_ns for m in runs),
        cpu_ns=sum(m.cpu_ns for m in runs), latency=Latency.from_ns(samples), errors=sum(m.errors for m in runs),
        mode=first.mode, depth=first.depth, prefault=first.prefault, counters=counters, extra=extra,
        samples=samples, parts=tuple(m.mb_s for m in runs),
        device_cpu_ns=None if None in device_cpu else sum(ns or 0 for ns in device_cpu))


def measurement_dict(m: Measurement, peer: Measurement | None = None,
                     inline: Measurement | None = None) -> dict[str, Any]:
    """The JSON form of a measurement: raw counts and the derived figures."""
    out: dict[str, Any] = {
        "label": m.label, "mode": m.mode, "depth": m.depth, "jobs": m.jobs, "errors": m.errors,
        "bytes_in": m.bytes_in, "bytes_out": m.bytes_out, "seconds": round(m.seconds, 6),
        "mb_s": _num(m.mb_s), "jobs_s": _num(m.jobs_s), "ratio": _num(m.ratio), "cpu_rate": _num(m.cpu_rate),
        "cpu_us_per_job": _num(m.cpu_us_per_job),
        "latency_us": {"count": m.latency.count, "p50": _num(m.latency.p50_us), "p99": _num(m.latency.p99_us),
                       "mean": _num(m.latency.mean_us), "max": _num(m.latency.max_us)},
    }
    if m.prefault is not None:
        out["prefault"] = m.prefault
    if m.parts:
        out["repeats_mb_s"] = [_num(x, 3) for x in m.parts]
    if m.counters is not None:
        c = m.counters
        out.update({
            "engines": c.engines, "iopf": c.iopf, "iopf_per_job": _num(m.iopf_per_job),
            "fault_pages": c.fault_pages, "device_jobs": c.queue_jobs,
            "engine_busy_ratio": _num(m.busy_ratio),
            "engine_busy_s": [round(ns / NS, 6) for ns in c.engine_busy_ns], "engine_jobs": list(c.engine_jobs),
            "mb_s_per_engine": _num(m.mb_s_per_engine),
            "engine_us_per_job": _num(sum(c.engine_busy_ns) / c.queue_jobs / 1e3 if c.queue_jobs else None),
            "jobs_per_batch": _num(c.queue_jobs / c.batches if c.batches else None),
            "interrupts_per_job": _num(c.interrupts / c.queue_jobs if c.queue_jobs else None),
            "doorbells_per_job": _num(c.doorbells / c.queue_jobs if c.queue_jobs else None),
        })
        if peer is not None:
            out["per_engine_vs_bare"] = _num(m.vs(peer))
    if m.device_cpu_ns is not None:
        out["device_cpu_s"] = round(m.device_cpu_ns / NS, 6)
        out["device_cpu_us_per_job"] = _num(m.cpu_us_per_job)
    if inline is not None and m is not inline:
        out["cpu_vs_inline"] = _num(m.cpu_vs(inline))
    out.update(m.extra)
    return out


def _num(value: float | None, digits: int = 4) -> float | None:
    """JSON has no NaN: unknown figures become ``null``."""
    if value is None or math.isnan(value) or math.isinf(value):
        return None
    return round(value, digits)


def best(runs: Sequence[Measurement]) -> Measurement:
    """The device run with the highest MB/s per engine (the headline run)."""
    if not runs:
        raise ValueError("no runs")
    return max(runs, key=lambda m: m.mb_s_per_engine)


# ---- rendering ------------------------------------------------------------------------------
def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned (numbers)."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [str(cells[0]).ljust(widths[0])]
        parts += [str(cell).rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def render_markdown(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """The same table in Markdown (for docs)."""
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"]
    out += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(out)


HEADERS: Final = ("run", "MB/s", "jobs/s", "ratio", "p50 us", "p99 us", "IOPF/job", "engine busy", "CPU",
                  "CPU us/job", "CPU/job vs inline", "MB/s/engine vs bare")


def table_rows(peer: Measurement | None, runs: Sequence[Measurement],
               inline: Measurement | None = None) -> list[list[str]]:
    """One row per measurement, the peer first, then the inline call; device-only columns are
    ``-`` for those two. ``CPU us/job`` is the device process's for device rows."""
    rows: list[list[str]] = []
    for m in [x for x in (peer, inline) if x is not None] + list(runs):
        device = m.counters is not None
        rows.append([
            m.label, f"{m.mb_s:.1f}", f"{m.jobs_s:.0f}", _fmt(m.ratio, "{:.3f}"), _fmt(m.latency.p50_us, "{:.0f}"),
            _fmt(m.latency.p99_us, "{:.0f}"), _fmt(m.iopf_per_job, "{:.3f}") if device else "-",
            _fmt(m.busy_ratio, "{:.0%}") if device else "-", f"{m.cpu_rate:.0%}", _fmt(m.cpu_us_per_job, "{:.1f}"),
            _fmt(m.cpu_vs(inline), "{:.2f}x") if inline is not None and m is not inline else "-",
            _fmt(m.vs(peer), "{:.2f}x") if device and peer is not None else "-",
        ])
    return rows


def _fmt(value: float | None, spec: str) -> str:
    if value is None or math.isnan(value):
        return "-"
    return spec.format(value)


def headline(peer: Measurement, run: Measurement) -> str:
    engines = run.engines or 1
    return (f"headline: device {run.mb_s_per_engine:.1f} MB/s per engine ({run.mb_s:.1f} MB/s on {engines} "
            f"engine{'s' if engines != 1 else ''}, {run.label}) = {run.vs(peer):.2f}x bare python-zstandard "
            f"({peer.mb_s:.1f} MB/s on one thread)")


def cpu_headline(inline: Measurement, run: Measurement) -> str:
    return (f"device CPU: {run.cpu_us_per_job:.1f} us per job ({run.label}) = {run.cpu_vs(inline):.2f}x the same "
            f"zstd call inline ({inline.cpu_us_per_job:.1f} us per call)")


def format_progress(label: str, elapsed_s: float, total_s: float, jobs: int, bytes_in: int) -> str:
    """One progress line: where the run is and its throughput so far."""
    rate = bytes_in / elapsed_s / MB if elapsed_s > 0 else 0.0
    jobs_s = jobs / elapsed_s if elapsed_s > 0 else 0.0
    done = min(elapsed_s, total_s)
    return f"[{label}] {done:4.1f}/{total_s:.1f} s  {jobs} jobs  {jobs_s:.0f} jobs/s  {rate:.1f} MB/s"


def rate_limited(now_s: float, last_s: float, interval_s: float) -> bool:
    """Whether a progress update is due."""
    return now_s - last_s >= interval_s
