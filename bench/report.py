"""Benchmark results and their rendering: pure functions from rows to markdown and JSON.

Absolute numbers differ between machines and even between runs on one machine, so every table also
gives each server's throughput as a ratio to the best peer measured in the same run, and its host
CPU per request as a ratio to the echo floor's (the HTTP work alone) under the same load.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from bench.wrk import SOCKET_TIMEOUT, WrkResult

MIB = 1024 * 1024
DASH = "—"


class Role(StrEnum):
    """What a server is in the comparison; it decides which ratio it sets or gets."""

    WARPZIP = "warpzip"
    """The server under test; runs a device process whose CPU is accounted apart."""
    PEER = "peer"
    """A server a user would otherwise write; the best one sets the throughput bar."""
    FLOOR = "floor"
    """The HTTP work without compression; sets the host CPU floor, never the throughput bar."""


@dataclass(frozen=True)
class Row:
    """One server under one load (body profile × connections): measured, or why not."""

    server: str
    role: Role
    size: str
    connections: int
    mean_body_bytes: float
    wrk: WrkResult | None = None
    cpu_seconds: float | None = None
    device_cpu_seconds: float | None = None
    """The device processes' share of ``cpu_seconds``; ``None`` for a server without a device."""
    peak_rss_bytes: int | None = None
    failure: str | None = None

    @property
    def req_per_s(self) -> float | None:
        """Successful (non-error status) responses per second; ``None`` when not measured."""
        return None if self.wrk is None or self.failure else self.wrk.ok_per_second

    def _per_ok_response_us(self, seconds: float | None) -> float | None:
        """CPU ``seconds`` per successful response, in µs; ``None`` when not measured."""
        if self.wrk is None or self.failure or seconds is None:
            return None
        ok = self.wrk.requests - self.wrk.non2xx
        return seconds * 1e6 / ok if ok else None

    @property
    def cpu_us_per_request(self) -> float | None:
        """Server CPU (the whole tree: workers and device) per successful response, in µs — on a
        CPU-bound machine the figure that decides who can be fastest."""
        return self._per_ok_response_us(self.cpu_seconds)

    @property
    def host_cpu_us_per_request(self) -> float | None:
        """The tree's CPU outside the device per successful response, in µs: what the host would
        still pay if the engines were silicon (the whole tree for a server without a device)."""
        if self.cpu_seconds is None:
            return None
        return self._per_ok_response_us(self.cpu_seconds - (self.device_cpu_seconds or 0.0))

    @property
    def device_cpu_us_per_job(self) -> float | None:
        """The device processes' CPU per successful response (one job each), in µs."""
        return self._per_ok_response_us(self.device_cpu_seconds)

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


def _ratios(rows: Sequence[Row], role: Role, value: Callable[[Row], float | None],
            pick: Callable[[float, float], float]) -> list[float | None]:
    """Each row's ``value`` over the reference, the ``pick`` (max or min) of ``value`` among the
    rows of ``role`` under the same load; ``None`` if either is missing."""
    reference: dict[tuple[str, int], float] = {}
    for row in rows:
        measured = value(row)
        if row.role is role and measured is not None:
            known = reference.get(_load(row))
            reference[_load(row)] = measured if known is None else pick(known, measured)
    result: list[float | None] = []
    for row in rows:
        measured, bar = value(row), reference.get(_load(row))
        result.append(None if measured is None or not bar else measured / bar)
    return result


def ratios_to_best_peer(rows: Sequence[Row]) -> list[float | None]:
    """Each row's req/s over the best peer's req/s under the same load (``None`` if either is
    missing, e.g. the row failed or no peer was measured)."""
    return _ratios(rows, Role.PEER, lambda row: row.req_per_s, max)


def ratios_to_echo_floor(rows: Sequence[Row]) -> list[float | None]:
    """Each row's host CPU per request (outside any device) over the echo floor's CPU per request
    under the same load; with several floors measured (1 and 2 processes), the cheapest, so the
    ratio is never flattered. ``None`` if either is missing."""
    return _ratios(rows, Role.FLOOR, lambda row: row.host_cpu_us_per_request, min)


HEADER = ("server|req/s|MB/s in|p50 ms|p99 ms|CPU s|CPU µs/req|host µs/req outside device|device µs/job|"
          "peak RSS MiB|non-2xx / err|× best peer|× echo floor").split("|")
ALIGN = ["---", *["---:"] * (len(HEADER) - 1)]


def _number(value: float | None, digits: int) -> str:
    return DASH if value is None else f"{value:,.{digits}f}"


def _ratio(value: float | None) -> str:
    return DASH if value is None else f"{value:.2f}×"


def _cells(row: Row, to_peer: float | None, to_floor: float | None) -> list[str]:
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
        _number(row.host_cpu_us_per_request, 0),
        _number(row.device_cpu_us_per_job, 0),
        _number(None if row.peak_rss_bytes is None else row.peak_rss_bytes / MIB, 1),
        f"{row.wrk.non2xx} / {row.wrk.errors}",
        _ratio(to_peer),
        _ratio(to_floor),
    ]


def render_markdown(meta: Meta, rows: Sequence[Row]) -> str:
    """The report: a header saying where and how, then one table per body profile × connections."""
    ratios = list(zip(ratios_to_best_peer(rows), ratios_to_echo_floor(rows), strict=True))
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
        lines += [_line(_cells(row, *ratio)) for row, ratio in group]
        failures = [row for row, _ in group if row.failure is not None]
        if failures:
            lines.append("")
            lines += [f"- {row.server} FAILED: {row.failure}" for row in failures]
    lines += [
        "",
        "req/s counts successful responses only; MB/s is request-body bytes (10^6) per second; p50/p99 are",
        "wrk's latencies; CPU s is the user+system time of the server's whole process tree during the",
        "measured run, CPU µs/req that time per successful response; host µs/req outside device is the",
        "same without warpzip's device process (`python -m warp.device`), what the host would still pay if",
        "the engines were silicon (the whole tree for servers without a device); device µs/job is the",
        "device process's CPU per successful response; peak RSS is the highest summed RSS of the tree",
        "over samples every 0.2 s (pages shared between processes count once per process); × best peer",
        "divides req/s by the best peer's under the same load (the echo floor is not a peer); × echo",
        "floor divides host µs/req outside device by the echo floor's CPU µs/req under the same load",
        "(echo: an aiohttp + uvloop handler answering the first third of the body, no compression).",
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
                "host_cpu_us_per_request": row.host_cpu_us_per_request,
                "device_cpu_us_per_job": row.device_cpu_us_per_job,
                "ratio_to_best_peer": to_peer,
                "ratio_to_echo_floor": to_floor,
            }
            for row, to_peer, to_floor in zip(rows, ratios_to_best_peer(rows), ratios_to_echo_floor(rows), strict=True)
        ],
    }
