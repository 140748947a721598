"""Optional PNG plots: for a concurrency sweep, req/s and p99 against connections (``sweep-<size>``);
for a run at one concurrency, req/s and p99 of every server side by side (``servers-<size>``), which
is where warpzip at 1 and 2 workers (``--workers``) meets the peers. One file per size.

matplotlib is a heavy optional dependency, so it is imported only here and only when plots are
asked for; without it the driver says so and still writes its tables.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.report import Row


def series(rows: Sequence[Row], size: str) -> dict[str, list[tuple[int, float, float]]]:
    """Per server, the measured (connections, req/s, p99 ms) points for one size, by connections."""
    points: dict[str, list[tuple[int, float, float]]] = {}
    for row in rows:
        rate = row.req_per_s
        if row.size == size and rate is not None and row.wrk is not None:
            points.setdefault(row.server, []).append((row.connections, rate, row.wrk.p99_us / 1000))
    return {server: sorted(values) for server, values in points.items()}


def plot(rows: Sequence[Row], directory: Path) -> list[Path]:
    """Writes one PNG per size and returns the paths; ``ImportError`` without matplotlib."""
    import matplotlib

    matplotlib.use("Agg")  # no display on benchmark machines
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for size in dict.fromkeys(row.size for row in rows):
        figure, (throughput, p99) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
        swept = sorted({row.connections for row in rows if row.size == size})
        if len(swept) == 1:
            written.append(_side_by_side(plt, figure, (throughput, p99), rows, size, directory))
            continue
        for server, points in series(rows, size).items():
            connections = [point[0] for point in points]
            throughput.plot(connections, [point[1] for point in points], marker="o", label=server)
            p99.plot(connections, [point[2] for point in points], marker="o", label=server)
        for axes, title, unit in ((throughput, "throughput", "req/s"), (p99, "p99 latency", "ms")):
            axes.set_xscale("log", base=2)
            axes.set_xticks(swept, [str(count) for count in swept])
            axes.set_xlabel("connections")
            axes.set_ylabel(unit)
            axes.set_title(f"{size}: {title}")
            axes.grid(True, alpha=0.3)
        throughput.legend()
        path = directory / f"sweep-{re.sub(r'[^a-z0-9]+', '', size.lower())}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(path)
    return written


def _side_by_side(plt: Any, figure: Any, axes: tuple[Any, Any], rows: Sequence[Row], size: str,
                  directory: Path) -> Path:
    """Bars of req/s and p99 per server for one size at its one connection count."""
    measured = [row for row in rows if row.size == size and row.req_per_s is not None and row.wrk is not None]
    names = [row.server for row in measured]
    colours = ["tab:blue" if not row.is_peer else "tab:gray" for row in measured]
    throughput, p99 = axes
    throughput.bar(names, [row.req_per_s or 0.0 for row in measured], color=colours)
    p99.bar(names, [row.wrk.p99_us / 1000 if row.wrk else 0.0 for row in measured], color=colours)
    connections = measured[0].connections if measured else 0
    figure.suptitle(f"{size}, {connections} connections (blue: warpzip, grey: peers)")
    for ax, title, unit in ((throughput, "throughput", "req/s"), (p99, "p99 latency", "ms")):
        ax.set_title(title)
        ax.set_ylabel(unit)
        ax.tick_params(axis="x", rotation=30)
        ax.grid(True, axis="y", alpha=0.3)
    path = directory / f"servers-{re.sub(r'[^a-z0-9]+', '', size.lower())}.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
