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


def panel_series(base: str, panel: Json, window: Window) -> list[Series]:
    """Every series of every target of the panel, legends formatted, on the shared grid so that
    stacking is a plain sum and gaps stay gaps (the panels do not span nulls)."""
    first, size = window.start - PAD_SECONDS, len(grid(window))
    found = []
    for target in panel["targets"]:
        for result in query_range(base, substitute(target["expr"]), window):
            values = [math.nan] * size
            for stamp, value in result["values"]:
                values[round((float(stamp) - first) / STEP_SECONDS)] = float(value)
            found.append(Series(legend(target.get("legendFormat", ""), result["metric"]), values))
    return found
