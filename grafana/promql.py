"""A Prometheus HTTP API client for the render: the matrix of each panel's queries over the load
window, on one shared one-second grid."""

from __future__ import annotations

import json
import math
import urllib.parse
import urllib.request
from dataclasses import dataclass

from grafana.load import Window
from grafana.panels import Json, legend, substitute

PAD_SECONDS = 5  # drawn before and after the load, so the graphs start and end at idle
STEP_SECONDS = 1


def api(base: str, path: str, **params: str) -> Json:
    """One Prometheus HTTP API call; a non-success reply is an error, not an empty graph."""
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as response:
        reply: Json = json.loads(response.read())
    if reply.get("status") != "success":
        raise RuntimeError(f"{path} {params}: {reply}")
    return reply


def query_range(base: str, expr: str, window: Window) -> list[Json]:
    """The matrix Grafana would draw over the load window (padded), one point per second."""
    reply = api(base, "/api/v1/query_range", query=expr, start=f"{window.start - PAD_SECONDS:.3f}",
                end=f"{window.end + PAD_SECONDS:.3f}", step=str(STEP_SECONDS))
    return list(reply["data"]["result"])


@dataclass(frozen=True)
class Series:
    """One line of a panel, its values on the window's one-second grid (NaN where there was no sample)."""

    label: str
    values: list[float]


def grid(window: Window) -> list[float]:
    """The query_range timestamps: Prometheus evaluates at start + k * step exactly."""
    first = window.start - PAD_SECONDS
    count = int((window.end + PAD_SECONDS - first) // STEP_SECONDS) + 1
    return [first + k * STEP_SECONDS for k in range(count)]


def series_on_grid(base: str, expr: str, legend_format: str, window: Window) -> list[Series]:
    """The series of one dashboard query (variables substituted), legends formatted, on the
    shared grid so that stacking is a plain sum and gaps stay gaps (the panels do not span nulls)."""
    first, size = window.start - PAD_SECONDS, len(grid(window))
    found = []
    for result in query_range(base, substitute(expr), window):
        values = [math.nan] * size
        for stamp, value in result["values"]:
            values[round((float(stamp) - first) / STEP_SECONDS)] = float(value)
        found.append(Series(legend(legend_format, result["metric"]), values))
    return found


def panel_series(base: str, panel: Json, window: Window) -> list[Series]:
    """Every series of every target of the panel."""
    return [series for target in panel["targets"]
            for series in series_on_grid(base, target["expr"], target.get("legendFormat", ""), window)]


@dataclass(frozen=True)
class Mark:
    """One annotation of the dashboard: its name, icon colour and the times its events begin."""

    name: str
    colour: str
    times: tuple[float, ...]


def starts(values: list[float], times: list[float]) -> list[float]:
    """Where each run of samples begins: Grafana merges an annotation query's consecutive points
    into one region, so an event is the first point after a gap."""
    return [when for k, (when, value) in enumerate(zip(times, values, strict=True))
            if not math.isnan(value) and (k == 0 or math.isnan(values[k - 1]))]


def annotation_marks(base: str, dashboard: Json, window: Window) -> list[Mark]:
    """Every enabled Prometheus annotation of the dashboard, its query run over the window."""
    marks = []
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if "expr" not in annotation or not annotation.get("enable", True):
            continue
        times = grid(window)
        found = sorted(when for series in series_on_grid(base, annotation["expr"], "", window)
                       for when in starts(series.values, times))
        marks.append(Mark(annotation["name"], annotation["iconColor"], tuple(found)))
    return marks
