"""Optional PNG plots. Per size and connection count, the servers side by side (``servers-<size>``
for a size's lowest count, ``servers-<size>-c<N>`` for the others): req/s, p99, and CPU µs per
request split into host and device, against the echo floor's line. Per size measured at several
counts, req/s and p99 against connections (``sweep-<size>``).

The echo floor is drawn apart from the peers (hatched bars, dashed lines): it does not
compress, so its req/s is a ceiling no compressing server reaches and its CPU a floor.

matplotlib is a heavy optional dependency, so it is imported only here and only when plots are
asked for; without it the driver says so and still writes its tables.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.report import Role, Row

COLOURS = {Role.WARPZIP: "tab:blue", Role.PEER: "tab:gray", Role.FLOOR: "tab:green"}
DEVICE_COLOUR = "tab:orange"
FLOOR_HATCH = "//"
FLOOR_LINE = {"color": COLOURS[Role.FLOOR], "linestyle": "--"}


def series(rows: Sequence[Row], size: str) -> dict[str, list[tuple[int, float, float]]]:
    """Per server, the measured (connections, req/s, p99 ms) points for one size, by connections."""
    points: dict[str, list[tuple[int, float, float]]] = {}
    for row in rows:
        rate = row.req_per_s
        if row.size == size and rate is not None and row.wrk is not None:
            points.setdefault(row.server, []).append((row.connections, rate, row.wrk.p99_us / 1000))
    return {server: sorted(values) for server, values in points.items()}


def _slug(size: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", size.lower())


def plot(rows: Sequence[Row], directory: Path) -> list[Path]:
    """Writes the PNGs and returns their paths; ``ImportError`` without matplotlib."""
    import matplotlib

    matplotlib.use("Agg")  # no display on benchmark machines
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for size in dict.fromkeys(row.size for row in rows):
        counts = sorted({row.connections for row in rows if row.size == size})
        for count in counts:
            name = f"servers-{_slug(size)}" + ("" if count == counts[0] else f"-c{count}")
            written.append(_side_by_side(plt, [r for r in rows if (r.size, r.connections) == (size, count)],
                                         directory / f"{name}.png"))
        if len(counts) > 1:
            written.append(_sweep(plt, rows, size, counts, directory / f"sweep-{_slug(size)}.png"))
    return written


def _sweep(plt: Any, rows: Sequence[Row], size: str, counts: list[int], path: Path) -> Path:
    """req/s and p99 against connections for one size, a line per server."""
    figure, (throughput, p99) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    roles = {row.server: row.role for row in rows}
    for server, points in series(rows, size).items():
        floor = roles[server] is Role.FLOOR
        style = {"linestyle": "--", "label": f"{server} (echo floor)"} if floor else {"label": server}
        connections = [point[0] for point in points]
        throughput.plot(connections, [point[1] for point in points], marker="o", **style)
        p99.plot(connections, [point[2] for point in points], marker="o", **style)
    for axes, title, unit in ((throughput, "throughput", "req/s"), (p99, "p99 latency", "ms")):
        axes.set_xscale("log", base=2)
        axes.set_xticks(counts, [str(count) for count in counts])
        axes.set_xlabel("connections")
        axes.set_ylabel(unit)
        axes.set_title(f"{size}: {title}")
        axes.grid(True, alpha=0.3)
    throughput.legend()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _side_by_side(plt: Any, rows: Sequence[Row], path: Path) -> Path:
    """Bars per server under one load: req/s, p99, and CPU per request (host outside the device,
    with the device stacked on top), the echo floor's CPU as a dashed line across the servers."""
    measured = [row for row in rows if row.req_per_s is not None and row.wrk is not None]
    figure, (throughput, p99, cpu) = plt.subplots(1, 3, figsize=(15, 4.4), constrained_layout=True)
    names = [row.server for row in measured]
    colours = [COLOURS[row.role] for row in measured]
    hatches = [FLOOR_HATCH if row.role is Role.FLOOR else "" for row in measured]
    throughput.bar(names, [row.req_per_s or 0.0 for row in measured], color=colours, hatch=hatches)
    p99.bar(names, [row.wrk.p99_us / 1000 if row.wrk else 0.0 for row in measured], color=colours, hatch=hatches)
    host = [row.host_cpu_us_per_request or 0.0 for row in measured]
    cpu.bar(names, host, color=colours, hatch=hatches)  # coloured by role like the other panels: no legend entry
    cpu.bar(names, [row.device_cpu_us_per_job or 0.0 for row in measured], bottom=host, color=DEVICE_COLOUR,
            label="device")
    floors = [cost for row in measured if row.role is Role.FLOOR and (cost := row.host_cpu_us_per_request)]
    if floors:
        cpu.axhline(min(floors), label="echo floor", **FLOOR_LINE)
    cpu.legend(fontsize="small")
    label = f"{measured[0].size}, {measured[0].connections} connections" if measured else "nothing measured"
    figure.suptitle(f"{label} (blue: warpzip, grey: peers, hatched green: echo floor, no compression)")
    for axes, title, unit in ((throughput, "throughput", "req/s"), (p99, "p99 latency", "ms"),
                              (cpu, "CPU per request: host, then device", "µs")):
        axes.set_title(title)
        axes.set_ylabel(unit)
        axes.tick_params(axis="x", rotation=30)
        axes.grid(True, axis="y", alpha=0.3)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
