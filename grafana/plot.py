"""Grafana's look in matplotlib: each panel a subplot titled like the panel, its unit on the y
axis, lines with Grafana's 10 % fill (stacked when the panel stacks), the dark theme."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from grafana.colours import resolve, series_colours
from grafana.load import Window
from grafana.panels import Json
from grafana.promql import PAD_SECONDS, Mark, Series, grid

BACKGROUND = "#111217"
PANEL = "#181b1f"
TEXT = "#ccccdc"
GRID = "#2c3235"

UNIT_LABELS = {"reqps": "requests/s", "ops": "per second", "Bps": "bytes/s", "s": "seconds",
               "percentunit": "percent", "short": "count", "none": "ratio"}
"""Grafana unit id → the y axis label. The tick labels carry the scaled unit (ms, MB/s, %)."""


def scaled(value: float, unit: str) -> str:
    """A tick label in the panel's unit, scaled the way Grafana scales it (ms, MB/s, k, %)."""
    if not math.isfinite(value):
        return ""
    if unit == "percentunit":
        return f"{value * 100:.0f}%"
    if unit == "s":
        for factor, suffix in ((1, "s"), (1e-3, "ms"), (1e-6, "µs")):
            if abs(value) >= factor or factor == 1e-6:
                return f"{value / factor:.3g} {suffix}" if value else "0"
    suffix = {"Bps": "B/s", "reqps": " req/s", "ops": " ops/s"}.get(unit, "")
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{suffix.strip()}"
    return f"{value:.3g}{suffix}" if unit != "Bps" else f"{value:.3g} B/s"


def style(axes: Any) -> None:
    """Grafana's dark panel: dark background, faint grid, muted text, no box."""
    axes.set_facecolor(PANEL)
    axes.grid(True, color=GRID, linewidth=0.6)
    axes.tick_params(colors=TEXT, labelsize=8)
    for side in axes.spines.values():
        side.set_visible(False)


def draw_marks(axes: Any, marks: Sequence[Mark], window: Window) -> None:
    """The dashboard's annotations as Grafana draws them on a graph: a dashed line in the
    annotation's colour at each event, named once in the legend."""
    for mark in marks:
        for index, when in enumerate(mark.times):
            axes.axvline(when - window.start, color=resolve(mark.colour), linestyle="--", linewidth=1.0, zorder=3,
                         label=mark.name if index == 0 else None)


def draw_panel(axes: Any, panel: Json, series: Sequence[Series], window: Window, log_y: bool = False,
               marks: Sequence[Mark] = ()) -> None:
    """One panel: lines with Grafana's 10 % fill (stacked when the panel stacks) in the colours the
    panel's JSON gives them (:mod:`grafana.colours`), unit on the y axis, dotted markers where each
    load phase starts, the annotations' events."""
    import numpy as np
    from matplotlib.ticker import FuncFormatter

    style(axes)
    defaults = panel["fieldConfig"]["defaults"]
    unit = defaults["unit"]
    stacked = defaults.get("custom", {}).get("stacking", {}).get("mode") == "normal"
    times = np.array(grid(window)) - window.start
    below = np.zeros(len(times))
    ordered = sorted(series, key=lambda s: s.label)
    colours = series_colours(panel["fieldConfig"], [item.label for item in ordered])
    for index, (item, color) in enumerate(zip(ordered, colours, strict=True)):
        layer = len(ordered) - index if stacked else 2  # a stack's near-zero top layers must not hide the edge below
        values = np.array(item.values)
        lower = below if stacked else np.zeros(len(times))
        if stacked:  # Grafana stacks a missing sample as 0
            values = below + np.nan_to_num(values)
            below = values
        axes.plot(times, values, color=color, linewidth=1.2, label=item.label, zorder=layer)
        axes.fill_between(times, lower, values, color=color, alpha=0.1, linewidth=0, zorder=1)
    for _, started in window.phases[1:]:
        axes.axvline(started - window.start, color=TEXT, alpha=0.35, linestyle=":", linewidth=0.8)
    draw_marks(axes, marks, window)
    if log_y:
        axes.set_yscale("symlog", linthresh=1)
    if defaults.get("min") is not None:
        axes.set_ylim(bottom=defaults["min"])
    if defaults.get("max") is not None:
        axes.set_ylim(top=defaults["max"])
    axes.set_xlim(-PAD_SECONDS, window.end - window.start + PAD_SECONDS)
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: scaled(value, unit)))
    axes.set_ylabel(UNIT_LABELS.get(unit, unit), color=TEXT, fontsize=8)
    axes.set_xlabel("seconds since the load started", color=TEXT, fontsize=8)
    title = panel["title"] + (" (log y axis)" if log_y else "")
    axes.set_title(title, color=TEXT, fontsize=10, loc="left", fontweight="bold")
    if not series:
        axes.text(0.5, 0.5, "No data", color=TEXT, ha="center", va="center", transform=axes.transAxes)
        return
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=4, fontsize=7, frameon=False,
                labelcolor=TEXT, handlelength=1.2)


def draw_dashboard(dashboard: Json, panels: Sequence[tuple[Json, Sequence[Series], bool]], window: Window,
                   out: Path, marks: Sequence[Mark] = ()) -> Path:
    """A 2-column grid of the panels (each with its series and whether its y axis is log), the
    annotations' events on each, the dashboard's title on top, the phases in the caption; written
    to ``out/<uid>.png``."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    rows = math.ceil(len(panels) / 2)
    figure, cells = plt.subplots(rows, 2, figsize=(14, 4.4 * rows), squeeze=False, constrained_layout=True)
    figure.set_facecolor(BACKGROUND)
    for axes, (panel, series, log_y) in zip(cells.flat, panels, strict=False):
        draw_panel(axes, panel, series, window, log_y=log_y, marks=marks)
    for axes in list(cells.flat)[len(panels):]:
        axes.set_visible(False)
    phases_text = "  |  ".join(f"{round(started - window.start)} s: {name}" for name, started in window.phases)
    figure.suptitle(f"{dashboard['title']}  —  {phases_text}", color=TEXT, fontsize=11, x=0.01, ha="left")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{dashboard['uid']}.png"
    figure.savefig(path, dpi=100, facecolor=BACKGROUND)
    plt.close(figure)
    return path
