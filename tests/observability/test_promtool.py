"""Static checks of everything under grafana/: promtool on the scrape config, the alert rules and
their unit tests, promtool's lint of the service's real /metrics output, and the house rules of the
generated dashboards (up to date with grafana/build.py, unit + description on every panel,
$__rate_interval in every range, the datasource/job/instance variables, stable ids)."""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any

import pytest
import yaml

from grafana import build
from tests.harness import REPO, require_tool

GRAFANA = REPO / "grafana"
ALERTS = {"WarpzipInstanceDown", "WarpzipServiceDown", "WarpzipDeviceDown", "WarpzipDeviceIsolated",
          "WarpzipQueueResets", "WarpzipIopfRateHigh", "WarpzipQueueSaturated", "WarpzipP99LatencyHigh",
          "WarpzipStreamsRefused",
          "WarpzipAvailabilitySLOBurnFast", "WarpzipAvailabilitySLOBurnSlow",
          "WarpzipLatencySLOBurnFast", "WarpzipLatencySLOBurnSlow"}
# the SLO burn-rate alerts' windows (SRE workbook: page 1h/5m at 14.4 and 6h/30m at 6, ticket 1d/2h at 3
# and 3d/6h at 1), each recorded per SLI by the group warpzip-slo-recordings
SLO_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
RECORDINGS = {f"job:warpzip_slo_{sli}:ratio_rate{window}" for sli in ("errors", "slow") for window in SLO_WINDOWS}
BURN_RATES = {"Fast": {("1h", "5m"): "14.4", ("6h", "30m"): "6"}, "Slow": {("1d", "2h"): "3", ("3d", "6h"): "1"}}
SLO_BUDGETS = {"Availability": ("errors", "0.001"), "Latency": ("slow", "0.01")}  # 99.9% / 99% objectives
RULE_TESTS = ("alerts.test.yml", "alerts.slo.test.yml")
RUNBOOK = "https://github.com/warpzip/warpzip/blob/main/docs/runbook.md#"
UIDS = {"warpzip-overview.json": "warpzip-overview", "warpzip-accelerator.json": "warpzip-accelerator"}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# PromQL functions that take a range vector; their range must be $__rate_interval in a dashboard
RANGE_FUNCTIONS = re.compile(r"\b(rate|irate|increase|delta|idelta|deriv|resets|changes|\w+_over_time)\s*\(")
RANGE = re.compile(r"\[([^\]]*)\]")
METRIC = re.compile(r"(?<![\w:])(warpzip_[a-z0-9_]+)\b")  # not the recorded job:warpzip_slo_…:… series


@pytest.fixture(scope="module")
def promtool() -> str:
    return require_tool("promtool")


def run_promtool(promtool: str, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run([promtool, *args], cwd=REPO, input=stdin, capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "warn" not in output.lower(), output
    return output


@pytest.mark.parametrize("config", ["grafana/prometheus.yml", "grafana/compose-prometheus.yml"])
def test_check_config(promtool: str, config: str) -> None:
    out = run_promtool(promtool, "check", "config", "--lint=all", "--lint-fatal", config)
    assert "SUCCESS: 1 rule files found" in out, out
    assert f"SUCCESS: {len(ALERTS) + len(RECORDINGS)} rules found" in out, out


def test_check_rules(promtool: str) -> None:
    out = run_promtool(promtool, "check", "rules", "--lint=all", "--lint-fatal", "grafana/alerts.yml")
    assert f"SUCCESS: {len(ALERTS) + len(RECORDINGS)} rules found" in out, out


def test_test_rules(promtool: str) -> None:
    out = run_promtool(promtool, "test", "rules", *(f"grafana/{name}" for name in RULE_TESTS))
    assert out.count("SUCCESS") == len(RULE_TESTS) and "FAILED" not in out, out


def scrape_after_traffic(url: str) -> str:
    """/metrics after a few compress and decompress requests and one 404, so every label set exists."""
    body = b"warpzip observability " * 200
    frame = b""
    for level in (1, 3, 9):
        request = urllib.request.Request(f"{url}/compress?level={level}", data=body, method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200
            frame = response.read()
    request = urllib.request.Request(f"{url}/decompress", data=frame, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.read() == body
    try:
        urllib.request.urlopen(f"{url}/no-such-page", timeout=10)
    except urllib.error.HTTPError as exc:
        assert exc.code == 404
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        return str(response.read().decode())


def test_check_metrics_on_live_exposition(server: Any, promtool: str) -> None:
    text = scrape_after_traffic(server.url)
    assert 'warpzip_http_requests_total{code="200",method="POST",route="/compress"}' in text
    out = run_promtool(promtool, "check", "metrics", stdin=text)
    assert out.strip() == "", out  # promtool prints nothing when the exposition has no lint problems


def exposed_names(text: str) -> set[str]:
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_every_referenced_metric_is_exposed(server: Any, dashboards: dict[str, dict[str, Any]]) -> None:
    """Dashboards and alerts only use metric names the running service really exposes."""
    exposed = exposed_names(scrape_after_traffic(server.url))
    exprs = [t["expr"] for d in dashboards.values() for p in d["panels"] for t in p.get("targets", [])]
    exprs += [t["query"]["query"] for d in dashboards.values() for t in d["templating"]["list"]
              if isinstance(t.get("query"), dict)]
    exprs += [r["expr"] for r in shipped_rules()]
    used = {m for e in exprs for m in METRIC.findall(e)}
    assert used - exposed == set(), sorted(exposed)


# ---- dashboards -------------------------------------------------------------------------------------

def test_dashboards_match_build_script() -> None:
    rendered = build.render()
    assert set(rendered) == set(UIDS)
    for name, text in rendered.items():
        committed = (GRAFANA / "dashboards" / name).read_text()
        assert committed == text, f"grafana/dashboards/{name} is stale: run python grafana/build.py"
    check = subprocess.run([sys.executable, str(GRAFANA / "build.py"), "--check"], capture_output=True, text=True,
                           timeout=60)
    assert check.returncode == 0, check.stderr


def test_dashboard_identity_and_variables(dashboards: dict[str, dict[str, Any]]) -> None:
    assert set(dashboards) == set(UIDS)
    for name, dashboard in dashboards.items():
        assert dashboard["uid"] == UIDS[name]
        assert dashboard["schemaVersion"] == 39
        assert dashboard["title"].startswith("warpzip")
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        for var in ("job", "instance"):
            assert variables[var]["type"] == "query"
            assert variables[var]["datasource"] == DATASOURCE
            assert variables[var]["query"]["query"].startswith("label_values(")
            assert variables[var]["query"]["query"].endswith(f", {var})")
        assert variables["instance"]["includeAll"] and variables["instance"]["allValue"] == ".*"


def test_panel_ids_and_layout(dashboards: dict[str, dict[str, Any]]) -> None:
    for name, dashboard in dashboards.items():
        ids = [p["id"] for p in dashboard["panels"]]
        assert ids == sorted(set(ids)), f"{name}: panel ids must be unique and in order: {ids}"
        for p in dashboard["panels"]:
            pos = p["gridPos"]
            assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24 and pos["h"] > 0, (name, p["title"], pos)


def test_every_panel_has_unit_and_description(panels: list[tuple[str, dict[str, Any]]]) -> None:
    assert len(panels) >= 20
    for name, panel in panels:
        where = f"{name} panel {panel['id']} {panel.get('title')!r}"
        assert panel.get("description", "").strip(), f"{where}: no description"
        assert panel.get("fieldConfig", {}).get("defaults", {}).get("unit"), f"{where}: no unit"
        assert panel["datasource"] == DATASOURCE, where
        assert panel["targets"], f"{where}: no query"
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), where
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, where


def test_every_rate_uses_rate_interval(panels: list[tuple[str, dict[str, Any]]]) -> None:
    checked = 0
    for name, panel in panels:
        for target in panel["targets"]:
            expr = target["expr"]
            ranges = RANGE.findall(expr)
            assert all(r == "$__rate_interval" for r in ranges), f"{name} panel {panel['id']}: {expr}"
            assert len(RANGE_FUNCTIONS.findall(expr)) == len(ranges), f"{name} panel {panel['id']}: {expr}"
            assert 'job="$job"' in expr and 'instance=~"$instance"' in expr, f"{name} panel {panel['id']}: {expr}"
            checked += len(ranges)
    assert checked > 20


# ---- prometheus, alerts, provisioning, compose --------------------------------------------------------

def test_scrape_config() -> None:
    config = yaml.safe_load((GRAFANA / "prometheus.yml").read_text())
    assert config["global"]["scrape_interval"] == "5s"
    assert config["rule_files"] == ["alerts.yml"]
    [job] = config["scrape_configs"]
    assert job["job_name"] == "warpzip"
    assert job["static_configs"][0]["targets"] == ["127.0.0.1:8080"]


def shipped_rules() -> list[dict[str, Any]]:
    """Every rule of grafana/alerts.yml, alerting and recording."""
    groups: list[dict[str, Any]] = yaml.safe_load((GRAFANA / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_alert_rules_shape() -> None:
    rules = [r for r in shipped_rules() if "alert" in r]
    assert {r["alert"] for r in rules} == ALERTS
    for rule in rules:
        assert rule.get("for"), rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        assert rule["annotations"]["runbook_url"] == RUNBOOK + rule["alert"].lower(), rule["alert"]
    isolated = next(r for r in rules if r["alert"] == "WarpzipDeviceIsolated")
    assert isolated["expr"].strip() == "warpzip_device_isolated == 1"
    down = {r["alert"]: " ".join(r["expr"].split()) for r in rules if r["alert"].endswith("Down")}
    assert down["WarpzipInstanceDown"] == 'up{job="warpzip"} == 0'  # the scrape job of prometheus.yml and deploy/
    assert 'absent(up{job="warpzip"})' in down["WarpzipServiceDown"]
    assert "warpzip_device_up" in down["WarpzipDeviceDown"]


def test_slo_recordings_and_burn_rates() -> None:
    """Each burn-rate alert is the workbook's pairs of windows at their burn rates, read from the
    recordings of the group warpzip-slo-recordings, which hold every window once per SLI."""
    groups = yaml.safe_load((GRAFANA / "alerts.yml").read_text())["groups"]
    [recordings] = [g for g in groups if g["name"] == "warpzip-slo-recordings"]
    assert {r["record"] for r in recordings["rules"]} == RECORDINGS
    assert all("alert" in r for g in groups if g is not recordings for r in g["rules"])
    for rule in recordings["rules"]:
        window = rule["record"].rsplit("ratio_rate", 1)[1]
        assert re.findall(r"\[(\w+)\]", rule["expr"]) == [window, window], rule["record"]
        assert 'route=~"/compress|/decompress"' in rule["expr"], rule["record"]
    alerts = {r["alert"]: r for r in shipped_rules() if "alert" in r}
    for slo, (sli, budget) in SLO_BUDGETS.items():
        for speed, pairs in BURN_RATES.items():
            rule = alerts[f"Warpzip{slo}SLOBurn{speed}"]
            assert rule["labels"] == {"severity": "critical" if speed == "Fast" else "warning", "slo": slo.lower()}
            terms = re.findall(rf"job:warpzip_slo_{sli}:ratio_rate(\w+) > \(([\d.]+) \* ([\d.]+)\)", rule["expr"])
            expected = [(window, rate, budget) for (long, short), rate in pairs.items() for window in (long, short)]
            assert terms == expected, (rule["alert"], terms)


def test_every_alert_has_firing_and_quiet_cases() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for name in RULE_TESTS:
        tests = yaml.safe_load((GRAFANA / name).read_text())
        assert tests["rule_files"] == ["alerts.yml"], name
        for case in tests["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert firing == ALERTS and quiet == ALERTS, (firing, quiet)


def test_grafana_provisioning_and_compose() -> None:
    datasource = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    [ds] = datasource["datasources"]
    assert ds["uid"] == "warpzip-prometheus" and ds["type"] == "prometheus"
    assert ds["jsonData"]["timeInterval"] == "5s"
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/warpzip.yml").read_text())
    [provider] = providers["providers"]
    assert provider["type"] == "file"
    compose = yaml.safe_load((GRAFANA / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"warpzip", "prometheus", "grafana"} <= set(services)
    image = services["warpzip"]["build"]
    assert (GRAFANA / image["context"]).resolve() == REPO
    assert (REPO / image["dockerfile"]).is_file()
    mounts: dict[str, str] = {}
    for service in ("prometheus", "grafana"):
        for volume in services[service]["volumes"]:
            source, target = volume.split(":")[:2]
            if source.startswith("."):
                assert (GRAFANA / source).exists(), volume
                mounts[target] = source
    assert mounts[provider["options"]["path"]] == "./dashboards"
    assert mounts["/etc/prometheus/prometheus.yml"] == "./compose-prometheus.yml"
    assert mounts["/etc/prometheus/alerts.yml"] == "./alerts.yml"
    assert mounts["/etc/grafana/provisioning/datasources/prometheus.yml"] == "../deploy/grafana/datasources.yml"
    assert mounts["/etc/grafana/provisioning/dashboards"] == "./provisioning/dashboards"
    # Issue 16: each service its own network identity, reached by name; no default admin password.
    assert not any("network_mode" in service for service in services.values())
    scrape = yaml.safe_load((GRAFANA / "compose-prometheus.yml").read_text())
    assert scrape["scrape_configs"][0]["static_configs"][0]["targets"] == ["warpzip:8080"]
    compose_ds = yaml.safe_load((REPO / "deploy/grafana/datasources.yml").read_text())["datasources"][0]
    assert compose_ds["url"] == "http://prometheus:9090"
    assert {k: v for k, v in compose_ds.items() if k != "url"} == {k: v for k, v in ds.items() if k != "url"}
    password = services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert password.startswith("${GRAFANA_ADMIN_PASSWORD:?")
