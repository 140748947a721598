"""The render's pure parts (grafana/panels.py, grafana/promql.py, grafana/plot.py, grafana/colours.py):
the PromQL and legends Grafana would make of a panel, the query grid, Grafana's tick labels, the
colour of every series, and the dashboards' annotations."""

from __future__ import annotations

import colorsys
import math
from typing import Any

import pytest

from grafana.colours import NAMED, PALETTE, matches, rgb, series_colours, shade
from grafana.load import Window
from grafana.panels import iter_panels, legend, load_dashboards, substitute
from grafana.plot import scaled
from grafana.promql import PAD_SECONDS, STEP_SECONDS, grid, starts


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


# ---- colours (grafana/colours.py) and annotations ---------------------------------------------------

def hue_of(colour: str) -> float:
    """The hue in degrees, 0 = red, 120 = green."""
    hue, _, _ = colorsys.rgb_to_hls(*rgb(colour))
    return hue * 360


def is_red(colour: str) -> bool:
    return hue_of(colour) < 12 or hue_of(colour) > 340


def is_green(colour: str) -> bool:
    return 90 < hue_of(colour) < 150


def dashboard_panel(uid: str, title: str) -> dict[str, Any]:
    return next(panel for panel in iter_panels(load_dashboards()[uid]) if panel["title"] == title)


@pytest.mark.parametrize(("uid", "title", "errors", "oks"), [
    ("warpzip-overview", "Request rate by route and code", ["/compress 503", "/decompress 500"],
     ["/compress 200", "/decompress 200", "/metrics 200"]),
    ("warpzip-overview", "Worker jobs by driver", ["failed zip", "failed cpu"], ["completed zip"]),
    ("warpzip-overview", "SVA buffer pool allocations", ["exhausted"], ["hit"]),
    ("warpzip-accelerator", "Device jobs completed by status", ["error"], ["ok"]),
    ("warpzip-accelerator", "I/O page faults by result", ["invalid"], ["success"]),
])
def test_dashboards_draw_errors_red_and_ok_green(uid: str, title: str, errors: list[str], oks: list[str]) -> None:
    """The overrides in the dashboards' JSON decide, whatever the legend order (errors sorted
    before ok drew them green)."""
    names = sorted([*errors, *oks, "unrelated"])
    colours = dict(zip(names, series_colours(dashboard_panel(uid, title)["fieldConfig"], names), strict=True))
    assert all(is_red(colours[name]) for name in errors), colours
    assert all(is_green(colours[name]) for name in oks), colours
    assert not is_red(colours["unrelated"]) and not is_green(colours["unrelated"]), colours
    assert len(set(colours.values())) == len(names), colours


def test_client_errors_are_orange_and_every_reason_of_a_red_panel_red() -> None:
    [client] = series_colours(dashboard_panel("warpzip-overview", "Request rate by route and code")["fieldConfig"],
                              ["/decompress 400"])
    assert 20 < hue_of(client) < 45, client
    reasons = ["addr_fault", "bad_sqe", "corrupt_input", "dst_too_small", "hw_error", "queue_stopped"]
    colours = series_colours(dashboard_panel("warpzip-accelerator", "Device job errors by reason")["fieldConfig"],
                             reasons)
    assert all(is_red(colour) for colour in colours) and len(set(colours)) == len(reasons), colours


def test_an_override_wins_over_the_default_and_later_overrides_win() -> None:
    config = {"defaults": {"color": {"mode": "palette-classic"}}, "overrides": [
        {"matcher": {"id": "byRegexp", "options": "/bad/i"}, "properties": [
            {"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}}]},
        {"matcher": {"id": "byRegexp", "options": "very bad"}, "properties": [
            {"id": "color", "value": {"mode": "fixed", "fixedColor": "#123456"}}]},
    ]}
    assert series_colours(config, ["BAD one", "very bad", "not very bad at all", "good"]) == [
        NAMED["red"], "#123456", NAMED["red"], PALETTE[0]]


def test_byregexp_is_anchored_unless_slashed() -> None:
    assert matches("error", "error") and not matches("error", "hw error")
    assert matches("/error/", "hw error") and matches("/ERROR/i", "hw error") and not matches("/ERROR/", "hw error")


@pytest.mark.parametrize("count", [1, 3, len(PALETTE), len(PALETTE) + 1, 3 * len(PALETTE)])
def test_series_without_meaning_never_share_a_colour(count: int) -> None:
    names = [f"queue {k}" for k in range(count)]
    colours = series_colours({"defaults": {"color": {"mode": "palette-classic"}}}, names)
    assert len(set(colours)) == count
    assert not any(is_red(colour) or is_green(colour) for colour in colours), colours


def test_shades_are_distinct_shades_of_one_colour() -> None:
    shades = [shade("red", k, 7) for k in range(7)]
    assert len(set(shades)) == 7
    assert all(abs(hue_of(colour) - hue_of(NAMED["red"])) < 3 for colour in shades), shades
    assert shade("green", 0, 1) == NAMED["green"]


def test_annotation_events_begin_after_each_gap() -> None:
    nan = math.nan
    assert starts([nan, 1, 1, nan, nan, 2, nan], [0, 1, 2, 3, 4, 5, 6]) == [1, 5]
    assert starts([1, nan], [10, 11]) == [10]


def test_dashboards_annotate_restarts_and_queue_resets() -> None:
    """Both dashboards mark the same events, each with its own colour, on the dashboard's data
    source and scoped by its variables (the e2e test runs the queries against Prometheus)."""
    for dashboard in load_dashboards().values():
        annotations = [a for a in dashboard["annotations"]["list"] if "expr" in a]
        assert {a["name"] for a in annotations} == {"Worker restarts", "Device restarts", "Queue resets"}
        assert len({a["iconColor"] for a in annotations}) == len(annotations)
        for annotation in annotations:
            assert annotation["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert 'job="$job", instance=~"$instance"' in annotation["expr"] and annotation["enable"]
            substitute(annotation["expr"])  # no variable Grafana would not fill in
