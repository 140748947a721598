"""The report of ``warpzip bench device``: every figure as JSON, and the text table and headlines
printed at the end of a run. Free of I/O but for reading the corpus file names."""

from __future__ import annotations

import math
import os
import platform
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, final

import zstandard

from warp.tool import corpus
from warp.tool.bench.measurement import Measurement, best
from warp.tool.bench.options import PROG, Options
from warp.tool.units import MB, NS, human_size

ALGORITHM: Final = "zstd"


@final
@dataclass(frozen=True)
class Target:
    """The device a run measured: its name and root, whether this tool started it, the PID that
    served the jobs and the engines of its compression pool (those that serve the jobs)."""

    name: str
    root: Path
    embedded: bool
    pid: int
    engines: int


def build(opts: Options, argv: Sequence[str], started: float, blocks: Sequence[bytes], target: Target,
          peer: Measurement, inline: Measurement, runs: Sequence[Measurement]) -> dict[str, Any]:
    """The JSON report: the command, configuration, device, machine, every measurement and the headline."""
    top = best(runs)
    return {
        "tool": PROG, "version": 1, "command": shlex.join(["warpzip", "bench", "device", *argv]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "config": {
            "algorithm": ALGORITHM, "level": opts.level, "block_size": opts.block_size, "mode": opts.mode,
            "depths": list(opts.depths), "prefault": list(opts.prefaults), "seconds": opts.seconds,
            "repeat": opts.repeat,
            "queues_per_direction": opts.queues, "loop": opts.loop if opts.mode == "async" else None,
            "corpus": str(opts.corpus), "corpus_bytes": sum(map(len, blocks)), "blocks": len(blocks),
        },
        "device": {"name": target.name, "root": str(target.root), "embedded": target.embedded, "pid": target.pid,
                   "engines": target.engines},
        "machine": {"cpus": os.cpu_count(), "loadavg": [round(x, 2) for x in os.getloadavg()],
                    "python": platform.python_version(), "zstandard": zstandard.__version__,
                    "zstd": zstandard.ZSTD_VERSION, "platform": platform.platform()},
        "peer": measurement_dict(peer),
        "inline": measurement_dict(inline),
        "runs": [measurement_dict(m, peer, inline) for m in runs],
        "headline": {"run": top.label, "device_mb_s": round(top.mb_s, 3),
                     "device_mb_s_per_engine": round(top.mb_s_per_engine, 3), "engines": target.engines,
                     "bare_mb_s": round(peer.mb_s, 3), "per_engine_vs_bare": round(top.vs(peer), 4),
                     "device_cpu_us_per_job": round(top.cpu_us_per_job, 2),
                     "inline_cpu_us_per_job": round(inline.cpu_us_per_job, 2),
                     "cpu_vs_inline": round(top.cpu_vs(inline), 4)},
        "notes": list(opts.notes),
    }


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


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned (numbers)."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [str(cells[0]).ljust(widths[0])]
        parts += [str(cell).rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


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


def render_report(report: dict[str, Any], peer: Measurement, inline: Measurement, runs: Sequence[Measurement],
                  opts: Options, engines: int) -> str:
    """The text printed at the end of a run: what was measured, the table, IOPFs with and without
    prefault, warnings for failed or unverified jobs, and the two headlines."""
    cfg, dev = report["config"], report["device"]
    names = [path.stem for path in corpus.files(opts.corpus)]
    where = "embedded, stopped after the run" if dev["embedded"] else f"under {dev['root']}"
    lines = [
        f"{PROG}: {ALGORITHM} level {opts.level}, {human_size(opts.block_size)} blocks, "
        f"{cfg['blocks']} blocks ({human_size(cfg['corpus_bytes'])}) of {'/'.join(names)} round-robin, "
        f"{opts.seconds:g} s per run" + (f", {opts.repeat} interleaved repeats summed" if opts.repeat > 1 else ""),
        f"device {dev['name']} ({where}): {engines} compression engine(s), {opts.queues} queue(s) per direction; "
        f"mode {opts.mode}" + {"sync": " (one job at a time: depth 1)", "batch": " (depth jobs per compress_many)"}
        .get(opts.mode, f", {opts.loop} loop"),
        "",
        render_table(HEADERS, table_rows(peer, runs, inline)),
        "",
    ]
    lines += _prefault_lines(opts.depths, runs) if len(opts.prefaults) == 2 else []
    for m in runs:
        if m.errors or m.extra.get("fallback_jobs") or m.extra.get("verified") is False:
            lines.append(f"warning: {m.label}: {m.errors} failed job(s) (engine status: count "
                         f"{m.extra.get('error_statuses')}), {m.extra.get('fallback_jobs')} re-run on the cpu, "
                         f"output verified: {m.extra.get('verified')}")
    lines += [_software_stage_line(m) for m in runs if "software_stage_cpu_ns" in m.extra]
    lines += ["", "in uadk_tool's layout (perf = input KiB/s, iops = Kops, CPU_rate = this process's CPU):"]
    lines += [uadk_line(m, opts.block_size) for m in (peer, inline, *runs)]
    lines += ["", headline(peer, best(runs)), cpu_headline(inline, best(runs))]
    return "\n".join(lines)


def _software_stage_line(m: Measurement) -> str:
    """An lz77_zstd run: what the host paid for the frames the device left to it."""
    per_job, share = m.extra.get("software_stage_cpu_us_per_job"), m.extra.get("software_stage_cpu_share")
    return (f"{m.label}: software stage (entropy coding + frame) {_fmt(per_job, '{:.1f}')} us CPU per job, "
            f"{_fmt(share, '{:.0%}')} of this process's CPU; ratio {_fmt(m.ratio, '{:.3f}')}")


def uadk_line(m: Measurement, block_size: int) -> str:
    """One run as ``uadk_tool benchmark`` prints it (zip_uadk_benchmark.c: ``algname: length: perf:
    iops: CPU_rate:``, then the average latency ``--latency`` adds and the compress data rate, the
    output as a share of the input), so figures read side by side with the real tool's."""
    rate = 100 * m.bytes_out / m.bytes_in if m.bytes_in else math.nan
    return (f"{m.extra.get('algorithm', ALGORITHM)}: {m.label}: length: {block_size} "
            f"perf: {m.mb_s * MB / 1024:.0f}KiB/s "
            f"iops: {m.jobs_s / 1000:.3f}Kops CPU_rate: {m.cpu_rate * 100:.2f}% "
            f"avg latency: {m.latency.mean_us:.1f}us compress data rate: {rate:.1f}%")


def _prefault_lines(depths: Sequence[int], runs: Sequence[Measurement]) -> list[str]:
    """``--compare-prefault``: IOPFs per job with and without prefault, one line a depth."""
    lines = []
    for depth in depths:
        pair = [m for m in runs if m.depth == depth]
        with_pf = next(m for m in pair if m.prefault)
        without = next(m for m in pair if not m.prefault)
        lines.append(f"IOPFs/job at depth {depth}: prefault {with_pf.iopf_per_job:.4f} "
                     f"({with_pf.counters.iopf if with_pf.counters else 0} faults), "
                     f"no-prefault {without.iopf_per_job:.4f} "
                     f"({without.counters.iopf if without.counters else 0} faults)")
    return lines
