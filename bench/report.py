"""Benchmark results and their rendering: pure functions from rows to markdown and JSON.

Absolute numbers differ between machines and even between runs on one machine, so every table also
gives each server's throughput as a ratio to the best peer measured in the same run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bench.wrk import SOCKET_TIMEOUT, WrkResult

MIB = 1024 * 1024
DASH = "—"


@dataclass(frozen=True)
class Row:
    """One server under one load (body profile × connections): measured, or why not."""

    server: str
    is_peer: bool
    size: str
    connections: int
    mean_body_bytes: float
    wrk: WrkResult | None = None
    cpu_seconds: float | None = None
    peak_rss_bytes: int | None = None
    failure: str | None = None

    @property
    def req_per_s(self) -> float | None:
        """Successful (non-error status) responses per second; ``None`` when not measured."""
        return None if self.wrk is None or self.failure else self.wrk.ok_per_second

    @property
    def cpu_us_per_request(self) -> float | None:
        """Server CPU (the whole tree: workers and device) per successful response, in µs — on a
        CPU-bound machine the figure that decides who can be fastest."""
        if self.wrk is None or self.failure or self.cpu_seconds is None:
            return None
        ok = self.wrk.requests - self.wrk.non2xx
        return self.cpu_seconds * 1e6 / ok if ok else None

    @property
    def mb_per_s(self) -> float | None:
        """Request bodies compressed per second, in 10^6 bytes."""
        rate = self.req_per_s
        return None if rate is None else rate * self.mean_body_bytes / 1e6


@dataclass(frozen=True)
class Meta:
    """Where and how the run was made, printed above the tables so a number is never orphaned."""

    command: str
    date: str
    uname: str
    cpu_model: str
    cores: int
    wrk_version: str
    level: int
    duration_s: int
    warmup_s: int
    corpus: str


def _load(row: Row) -> tuple[str, int]:
    """What rows must share to be compared: the body profile and the connection count."""
    return (row.size, row.connections)


def ratios_to_best_peer(rows: Sequence[Row]) -> list[float | None]:
    """Each row's req/s over the best peer's req/s under the same load (``None`` if either is
    missing, e.g. the row failed or no peer was measured)."""
    best: dict[tuple[str, int], float] = {}
    for row in rows:
        rate = row.req_per_s
        if row.is_peer and rate is not None:
            best[_load(row)] = max(best.get(_load(row), 0.0), rate)
    result: list[float | None] = []
    for row in rows:
        rate, bar = row.req_per_s, best.get(_load(row))
        result.append(None if rate is None or not bar else rate / bar)
    return result


HEADER = "server|req/s|MB/s in|p50 ms|p99 ms|CPU s|CPU µs/req|peak RSS MiB|non-2xx / err|× best peer".split("|")
ALIGN = ["---", *["---:"] * (len(HEADER) - 1)]


def _number(value: float | None, digits: int) -> str:
    return DASH if value is None else f"{value:,.{digits}f}"


def _cells(row: Row, ratio: float | None) -> list[str]:
    if row.failure is not None or row.wrk is None:
        return [row.server, "**FAILED**", *[DASH] * (len(HEADER) - 2)]
    return [
        row.server,
        _number(row.req_per_s, 0),
        _number(row.mb_per_s, 1),
        _number(row.wrk.p50_us / 1000, 2),
        _number(row.wrk.p99_us / 1000, 2),
        _number(row.cpu_seconds, 1),
        _number(row.cpu_us_per_request, 0),
        _number(None if row.peak_rss_bytes is None else row.peak_rss_bytes / MIB, 1),
        f"{row.wrk.non2xx} / {row.wrk.errors}",
        DASH if ratio is None else f"{ratio:.2f}×",
    ]


def render_markdown(meta: Meta, rows: Sequence[Row]) -> str:
    """The report: a header saying where and how, then one table per body profile × connections."""
    ratios = ratios_to_best_peer(rows)
    lines = [
        "# warpzip HTTP benchmark",
        "",
        f"- command: `{meta.command}`",
        f"- date: {meta.date}",
        f"- `uname -a`: `{meta.uname}`",
        f"- CPU: {meta.cpu_model}, {meta.cores} cores",
        f"- load: {meta.wrk_version}, `wrk -t1 -cN -d{meta.duration_s}s --timeout {SOCKET_TIMEOUT} --latency "
        f"-s bench/post.lua URL`, {meta.warmup_s} s warm-up before each row, zstd level {meta.level}",
        f"- bodies: {meta.corpus}",
    ]
    for size, connections in dict.fromkeys(map(_load, rows)):  # in the order they were run
        group = [(row, ratio) for row, ratio in zip(rows, ratios, strict=True) if _load(row) == (size, connections)]
        lines += ["", f"## {size} · {connections} connections", "", _line(HEADER), _line(ALIGN)]
        lines += [_line(_cells(row, ratio)) for row, ratio in group]
        failures = [row for row, _ in group if row.failure is not None]
        if failures:
            lines.append("")
            lines += [f"- {row.server} FAILED: {row.failure}" for row in failures]
    lines += [
        "",
        "req/s counts successful responses only; MB/s is request-body bytes (10^6) per second; p50/p99 are",
        "wrk's latencies; CPU s is the user+system time of the server's whole process tree during the",
        "measured run, CPU µs/req that time per successful response; peak RSS is the highest summed RSS",
        "of that tree over samples every 0.2 s (pages shared between processes count once per process);",
        "× best peer divides req/s by the best non-warpzip server's under the same load.",
        "",
    ]
    return "\n".join(lines)


def _line(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def to_json(meta: Meta, rows: Sequence[Row]) -> dict[str, Any]:
    """Everything in the markdown, unrounded, for plots and for comparing runs."""
    return {
        "meta": asdict(meta),
        "results": [
            {
                **asdict(row),
                "req_per_s": row.req_per_s,
                "mb_per_s": row.mb_per_s,
                "cpu_us_per_request": row.cpu_us_per_request,
                "ratio_to_best_peer": ratio,
            }
            for row, ratio in zip(rows, ratios_to_best_peer(rows), strict=True)
        ],
    }
