"""Optional PNG plots of a concurrency sweep: req/s and p99 against connections, one file per size.

matplotlib is a heavy optional dependency, so it is imported only here and only when plots are
asked for; without it the driver says so and still writes its tables.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

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
    """Writes ``sweep-<size>.png`` per size and returns the paths; ``ImportError`` without matplotlib."""
    import matplotlib

    matplotlib.use("Agg")  # no display on benchmark machines
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for size in dict.fromkeys(row.size for row in rows):
        figure, (throughput, p99) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
        swept = sorted({row.connections for row in rows if row.size == size})
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
