"""The render's pure parts (grafana/panels.py, grafana/promql.py, grafana/plot.py): the PromQL and
legends Grafana would make of a panel, the query grid, and Grafana's tick labels."""

from __future__ import annotations

import pytest

from grafana.load import Window
from grafana.panels import iter_panels, legend, substitute
from grafana.plot import scaled
from grafana.promql import PAD_SECONDS, STEP_SECONDS, grid


def test_substitute_replaces_every_variable_form() -> None:
    expr = 'rate(x{job="$job",instance=~"${instance}"}[$__rate_interval])'
    assert substitute(expr) == 'rate(x{job="warpzip",instance=~".*"}[5s])'
    with pytest.raises(ValueError, match="unsubstituted"):
        substitute("rate(x[$unknown])")


def test_legend_formats_labels_or_falls_back_to_them() -> None:
    assert legend("{{route}} {{code}}", {"route": "/compress", "code": "200"}) == "/compress 200"
    assert legend("", {"route": "/compress"}) == '{"route": "/compress"}'


def test_iter_panels_includes_panels_in_collapsed_rows() -> None:
    dashboard = {"panels": [{"id": 1}, {"id": 2, "panels": [{"id": 3}]}]}
    assert [panel["id"] for panel in iter_panels(dashboard)] == [1, 2, 3]


def test_grid_is_the_padded_window_one_step_apart() -> None:
    points = grid(Window(start=100.0, end=110.0, phases=()))
    assert points[0] == 100.0 - PAD_SECONDS and points[-1] == 110.0 + PAD_SECONDS
    assert all(b - a == STEP_SECONDS for a, b in zip(points, points[1:], strict=False))


@pytest.mark.parametrize(("value", "unit", "label"), [
    (0.25, "percentunit", "25%"), (0.0042, "s", "4.2 ms"), (0, "s", "0"), (2_500_000, "Bps", "2.5 MB/s"),
    (1500, "reqps", "1.5 kreq/s"), (12, "short", "12"), (float("nan"), "s", ""),
])
def test_tick_labels_scale_like_grafana(value: float, unit: str, label: str) -> None:
    assert scaled(value, unit) == label
