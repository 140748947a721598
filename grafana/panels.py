"""The generated dashboards as Grafana reads them: panels, and their PromQL as Grafana sends it.

Small and standalone on purpose: anything that evaluates the dashboards' own queries (the render,
tests/observability) can import these instead of keeping its own copies.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

Json = dict[str, Any]

DASHBOARDS = Path(__file__).resolve().parent / "dashboards"

VARIABLES = {"job": "warpzip", "instance": ".*", "__rate_interval": "5s"}
"""What Grafana would send with job=warpzip, instance=All and a 1 s scrape interval on a short range."""


def load_dashboards(directory: Path = DASHBOARDS) -> dict[str, Json]:
    """The generated dashboards by uid (the JSON is what Grafana loads, so it is what we draw)."""
    dashboards = (json.loads(path.read_text()) for path in sorted(directory.glob("*.json")))
    return {dashboard["uid"]: dashboard for dashboard in dashboards}


def iter_panels(dashboard: Json) -> Iterator[Json]:
    """Every panel, including panels nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def substitute(expr: str, variables: dict[str, str] = VARIABLES) -> str:
    """The PromQL Grafana sends: ``$name`` and ``${name}`` replaced; a leftover ``$`` is a bug."""
    for name in sorted(variables, key=len, reverse=True):  # longest first: $__rate_interval before $job
        expr = expr.replace("${" + name + "}", variables[name]).replace("$" + name, variables[name])
    if "$" in expr:
        raise ValueError(f"unsubstituted variable in {expr}")
    return expr


def legend(template: str, labels: dict[str, str]) -> str:
    """Grafana's legendFormat: ``{{label}}`` replaced by the series' label value."""
    text = template
    for name, value in labels.items():
        text = text.replace("{{" + name + "}}", value)
    return text.strip() or json.dumps(labels)
