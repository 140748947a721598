"""The dashboards against a real Prometheus scraping a real server under wrk load.

One module-scoped setup starts ``warpzip serve``, a Prometheus with a temp copy of
grafana/prometheus.yml (the target's port adjusted, 1 s scrapes and rule evaluation) and drives
~8 s of 4 KiB POST /compress with wrk. Then every query of every panel of both dashboards, with the
Grafana variables substituted, must come back from /api/v1/query with status success and a
non-empty result; every annotation query must be valid, find its counters and mark nothing on a
healthy server; the variables' label_values queries must find the job and instance; and the alert
rules must be loaded, healthy and quiet.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from grafana.panels import VARIABLES, substitute
from tests.harness import REPO, require_tool, start_server, wait_until
from tests.harness.prometheus import Prometheus, start_prometheus
from tests.harness.wrk import run_wrk
from warp.device.launch import stop_process

pytestmark = pytest.mark.e2e

GRAFANA = REPO / "grafana"
BODY_SIZE = 4096
LOAD_SECONDS = 8
RATE_INTERVAL = "15s"  # what Grafana would pick for a 1 s scrape interval on a short time range

# queries (dashboard, panel id, refId) whose value under this load must be a finite number above zero;
# the others (5xx, fallback, failures, IOPF, depth and heap in use once the load stopped) only exist
MUST_BE_POSITIVE = {
    ("warpzip-overview.json", panel, ref) for panel, refs in
    {1: "A", 3: "ABC", 5: "AB", 6: "A", 7: "B", 10: "AB", 11: "B", 12: "A"}.items() for ref in refs
} | {
    ("warpzip-accelerator.json", panel, ref) for panel, refs in
    {3: "A", 5: "A", 6: "ABC", 7: "A", 8: "A", 10: "A", 11: "A", 12: "AB"}.items() for ref in refs
}


@dataclass
class Stack:
    prometheus: Prometheus
    target: str
    requests: int  # answered under the load


def grafana_sends(expr: str) -> str:
    """The query as Grafana sends it with job=warpzip, instance=All and a 1 s scrape interval."""
    return substitute(expr, VARIABLES | {"__rate_interval": RATE_INTERVAL})


def prometheus_config(tmp: Path, port: int) -> Path:
    """grafana/prometheus.yml with the server's port, 1 s scrapes and the alert rules by absolute path."""
    config = yaml.safe_load((GRAFANA / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = [str(GRAFANA / name) for name in config["rule_files"]]
    [job] = config["scrape_configs"]
    assert job["job_name"] == "warpzip"
    [static] = job["static_configs"]
    assert static["targets"] == ["127.0.0.1:8080"]
    static["targets"] = [f"127.0.0.1:{port}"]
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def drive_load(wrk: str, tmp: Path, url: str) -> int:
    """wrk for LOAD_SECONDS: every answer a correct frame; returns how many there were."""
    rng = random.Random(4096)
    words = b"warpzip accelerator queue doorbell interrupt engine page fault pasid zstd frame".split()
    body = tmp / "body.bin"
    body.write_bytes(b" ".join(rng.choice(words) for _ in range(BODY_SIZE))[:BODY_SIZE])
    result = run_wrk(wrk, f"{url}/compress?level=3", body, LOAD_SECONDS, connections=16)
    errors = result.connect + result.read + result.write + result.timeout
    assert result.requests > 0 and result.ok == result.requests and errors == 0, result.output
    return result.requests


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus_bin = require_tool("prometheus")
    wrk = require_tool("wrk")
    tmp = tmp_path_factory.mktemp("prometheus-e2e")
    server = start_server(tmp / "root", tmp / "server.log", "--access-log", "0")
    prometheus = None
    try:
        prometheus = start_prometheus(prometheus_bin, prometheus_config(tmp, server.port), tmp)

        def scraped(after: float, count: int) -> bool:
            assert prometheus is not None
            samples = prometheus.query('count_over_time(up{job="warpzip"}[1m])')
            stamps = prometheus.query('timestamp(up{job="warpzip"} == 1)')
            return bool(samples and stamps and float(samples[0]["value"][1]) >= count
                        and float(stamps[0]["value"][1]) > after)

        wait_until(lambda: scraped(0, 2), 15, "the first scrapes", prometheus.log)
        requests = drive_load(wrk, tmp, server.url)
        ended = time.time()
        # a few scrapes after the load, still well inside the 15 s rate window
        wait_until(lambda: scraped(ended + 1, LOAD_SECONDS), 10, "scrapes after the load", prometheus.log)
        yield Stack(prometheus, f"127.0.0.1:{server.port}", requests)
    finally:
        if prometheus is not None:
            stop_process(prometheus.proc)
        stop_process(server.proc)


def test_target_up(stack: Stack) -> None:
    [up] = stack.prometheus.query('up{job="warpzip"}')
    assert up["metric"]["instance"] == stack.target and up["value"][1] == "1"
    [total] = stack.prometheus.query('sum(warpzip_http_requests_total{route="/compress", code="200"})')
    assert float(total["value"][1]) >= stack.requests


def test_panel_query(stack: Stack, panel_target: tuple[str, dict[str, Any], dict[str, Any]]) -> None:
    name, panel, target = panel_target
    expr = grafana_sends(target["expr"])
    result = stack.prometheus.query(expr)
    assert result, f"{name} panel {panel['id']} {panel['title']!r} returned no series: {expr}"
    if (name, panel["id"], target["refId"]) in MUST_BE_POSITIVE:
        values = [float(series["value"][1]) for series in result]
        assert any(math.isfinite(v) and v > 0 for v in values), (panel["title"], expr, result)


def test_annotation_queries(stack: Stack, dashboards: dict[str, dict[str, Any]]) -> None:
    """Each annotation is valid PromQL over counters the server exposes (the same query without its
    threshold finds them) and marks nothing while no worker, device or queue was restarted."""
    annotations = [a for d in dashboards.values() for a in d["annotations"]["list"] if "expr" in a]
    assert len(annotations) >= 6
    for annotation in annotations:
        expr = grafana_sends(annotation["expr"])
        assert stack.prometheus.query(expr) == [], (annotation["name"], expr)
        unthresholded = expr.removesuffix(" > 0")
        assert unthresholded != expr, expr
        assert stack.prometheus.query(unthresholded), (annotation["name"], "no series", unthresholded)


def test_variable_queries(stack: Stack, dashboards: dict[str, dict[str, Any]]) -> None:
    """label_values(metric{selector}, label) as Grafana runs it: /api/v1/label/<label>/values?match[]=..."""
    expected = {"job": "warpzip", "instance": stack.target}
    for dashboard in dashboards.values():
        for variable in dashboard["templating"]["list"]:
            if variable["type"] != "query":
                continue
            match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"]["query"])
            assert match, variable
            selector, label = grafana_sends(match.group(1)), match.group(2)
            values = stack.prometheus.api(f"/api/v1/label/{label}/values", **{"match[]": selector})
            assert expected[label] in values, (variable["name"], values)


def test_alert_rules_loaded_healthy_and_quiet(stack: Stack) -> None:
    groups = stack.prometheus.api("/api/v1/rules")["groups"]
    rules = [r for group in groups for r in group["rules"]]
    shipped = yaml.safe_load((GRAFANA / "alerts.yml").read_text())["groups"]
    assert {r["name"] for r in rules} == {r.get("alert") or r["record"] for group in shipped for r in group["rules"]}
    alerting = [r for r in rules if r["type"] == "alerting"]
    assert len(alerting) >= 12
    for rule in rules:
        assert rule["health"] == "ok", rule
        assert not rule.get("lastError"), rule
        assert not rule["lastEvaluation"].startswith("0001"), rule  # evaluated at least once
    for rule in alerting:
        assert rule["state"] != "firing", rule  # a healthy server under light load


def test_slo_ratios_are_recorded(stack: Stack) -> None:
    """The latency SLI's bad-event ratio is recorded per job from the load's /compress requests."""
    [slow] = stack.prometheus.query("job:warpzip_slo_slow:ratio_rate5m")
    assert slow["metric"] == {"__name__": "job:warpzip_slo_slow:ratio_rate5m", "job": "warpzip"}, slow
    assert 0 <= float(slow["value"][1]) <= 1, slow
