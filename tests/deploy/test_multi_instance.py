"""Issue #10: three warpzip instances, each with its own runtime root and embedded device, behind
HAProxy as shipped (deploy/haproxy/haproxy.cfg, driven by its environment variables), scraped by
Prometheus as configured for compose (deploy/prometheus/prometheus.yml, its DNS discovery replaced
by the three loopback targets, labelled with namespace and pod as the Prometheus Operator would).

One module-scoped run: wrk POSTs 16 KiB bodies through HAProxy for 15 s; after 4 s instance ``a``
gets SIGTERM (graceful stop), after 8 s instance ``b``'s device gets SIGKILL. The tests then read
that run from every side: wrk (every answer a correct frame or a 503 with Retry-After), HAProxy
(``a`` taken out, traffic retried elsewhere), Prometheus (per-instance rates before and after the
stop, the dashboards' instance variable, the autoscaling query).

Each instance runs with the WARPZIP_* settings a pod gets (the image's ENV and the Deployment's
env), so the shipped heap size and shutdown timeout are the ones under test.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
import zstandard

from grafana.panels import VARIABLES, substitute
from tests.deploy.shipped import DEPLOY, kube, service_env
from tests.harness import REPO, ServerProc, require_tool, start_server, wait_until
from tests.harness.haproxy import LoadBalancer, start_haproxy
from tests.harness.prometheus import Prometheus, start_prometheus
from tests.harness.wrk import WrkResult, finish, start_wrk
from warp.device.launch import stop_process

pytestmark = pytest.mark.e2e

NAMESPACE = "warpzip-test"
PODS = ("a", "b", "c")  # haproxy servers warpzip1..3, in this order
BODY_SIZE = 16 << 10
LOAD_SECONDS = 15
STOP_AT, KILL_AT = 4.0, 8.0  # seconds into the load
RATE = "[5s]"  # five 1 s scrapes



@dataclass
class Run:
    wrk: WrkResult  # every response a zstd frame of the body sent or a 503 with Retry-After, else bad
    prometheus: Prometheus
    lb: LoadBalancer
    servers: dict[str, ServerProc]  # by pod name
    body: bytes
    stop_status: int  # exit status of instance a after SIGTERM
    stopped_at: float
    ended_at: float


def query(prometheus: Prometheus, expr: str, at: float) -> dict[str, float]:
    """An instant query at ``at``: its series, keyed by their pod label (or "" without one)."""
    return {series["metric"].get("pod", ""): float(series["value"][1]) for series in prometheus.query(expr, at)}


def prometheus_config(tmp: Path, targets: dict[str, int], haproxy_stats: str) -> Path:
    """deploy/prometheus/prometheus.yml for this run: 1 s scrapes, static targets instead of DNS."""
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    assert config["rule_files"] == ["alerts.yml"]  # grafana/alerts.yml, mounted beside it by compose
    config["rule_files"] = [str(REPO / "grafana" / "alerts.yml")]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"warpzip", "haproxy"}
    warpzip = jobs["warpzip"]
    assert warpzip.pop("dns_sd_configs")[0]["names"] == ["warpzip"]
    warpzip["static_configs"] = [{"targets": [f"127.0.0.1:{port}"], "labels": {"namespace": NAMESPACE, "pod": pod}}
                                 for pod, port in targets.items()]
    jobs["haproxy"]["static_configs"] = [{"targets": [haproxy_stats.removeprefix("http://")]}]
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def device_pid(server_pid: int) -> int:
    """The embedded device: the serve process's child running warp.device."""
    out = subprocess.run(["pgrep", "-P", str(server_pid), "-f", "warp.device"], capture_output=True, text=True)
    (pid,) = map(int, out.stdout.split())
    return pid


@pytest.fixture(scope="module")
def run(corpus: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    haproxy, wrk, prometheus = (require_tool(name) for name in ("haproxy", "wrk", "prometheus"))
    tmp = tmp_path_factory.mktemp("multi-instance")
    with corpus["xml"].open("rb") as f:
        body = f.read(BODY_SIZE)
    (tmp / "body.bin").write_bytes(body)

    started: list[subprocess.Popen[Any]] = []  # stopped in reverse order, whatever happens
    try:
        servers: dict[str, ServerProc] = {}
        with pytest.MonkeyPatch.context() as env:
            for key, value in service_env().items():  # host, port and root are overridden by flags
                env.setenv(key, value)
            for pod in PODS:
                (tmp / pod).mkdir()
                servers[pod] = start_server(tmp / pod / "root", tmp / pod / "server.log", "--access-log", "0")
                started.append(servers[pod].proc)
        lb = start_haproxy(haproxy, tmp, [f"127.0.0.1:{s.port}" for s in servers.values()])
        started.append(lb.proc)
        prom = start_prometheus(prometheus, prometheus_config(tmp, {p: s.port for p, s in servers.items()}, lb.stats),
                                tmp)
        started.append(prom.proc)
        wait_until(lambda: len(prom.query("up == 1")) == len(PODS) + 1, 30,  # every instance and haproxy
                   "prometheus to scrape every target", prom.log)

        load = start_wrk(wrk, f"{lb.url}/compress?level=3", tmp / "body.bin", LOAD_SECONDS, connections=16,
                         socket_timeout=10)
        started.append(load)
        began = time.monotonic()
        time.sleep(STOP_AT)
        stopped_at = time.time()
        servers["a"].proc.send_signal(signal.SIGTERM)
        stop_status = servers["a"].proc.wait(30)
        time.sleep(max(0.0, began + KILL_AT - time.monotonic()))
        os.kill(device_pid(servers["b"].proc.pid), signal.SIGKILL)  # instance b restarts it
        result = finish(load, LOAD_SECONDS + 30)
        ended_at = time.time()
        wait_until(lambda: prom.query(f"timestamp(up{{pod='b'}}) > {ended_at + 1}"), 10, "scrapes after the load")
        yield Run(result, prom, lb, servers, body, stop_status, stopped_at, ended_at)
    finally:
        for proc in reversed(started):
            stop_process(proc)


def test_every_response_is_a_frame_or_a_503_with_retry_after(run: Run) -> None:
    wrk = run.wrk
    print(wrk.output)
    assert wrk.bad == 0, wrk.output
    assert wrk.ok > 0 and wrk.ok + wrk.unavailable == wrk.requests, wrk.output  # nothing else at all
    # HAProxy stayed up and retried what the instances dropped: no socket error reached the client
    assert wrk.connect == wrk.read == wrk.write == wrk.timeout == 0, wrk.output


def test_the_stopped_instance_exited_cleanly_and_the_killed_device_came_back(run: Run) -> None:
    assert run.stop_status == 0
    wait_until(lambda: "restarting it" in run.servers["b"].log.read_text(), 10, "instance b to restart its device",
               run.servers["b"].log)
    # frames still decode through the load balancer, byte for byte
    request = urllib.request.Request(f"{run.lb.url}/compress", data=run.body, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert zstandard.ZstdDecompressor().decompress(response.read()) == run.body


def test_haproxy_took_the_stopped_instance_out(run: Run) -> None:
    rows = run.lb.servers()
    print({name: (row["status"], row["check_status"], "retries", row["wretr"], "redispatches", row["wredis"])
           for name, row in rows.items()})
    assert rows["warpzip1"]["status"].startswith("DOWN")
    assert rows["warpzip2"]["status"] == rows["warpzip3"]["status"] == "UP"
    # the same, as Prometheus sees it through HAProxy's exporter (the compose scrape job)
    down = query(run.prometheus, 'haproxy_server_status{proxy="warpzip", server="warpzip1", state="DOWN"}',
                 run.ended_at)
    assert down == {"": 1.0}


def test_prometheus_shows_the_traffic_moving(run: Run) -> None:
    rate = f'sum by (pod) (rate(warpzip_http_requests_total{{job="warpzip", route="/compress"}}{RATE}))'
    before = query(run.prometheus, rate, run.stopped_at - 0.2)
    after = query(run.prometheus, rate, run.ended_at - 0.5)
    print("req/s before the stop", before, "after", after)
    assert set(before) == set(PODS) and all(v > 0 for v in before.values()), before
    assert set(after) == {"b", "c"} and all(v > 0 for v in after.values()), after
    up = query(run.prometheus, 'up{job="warpzip"}', run.ended_at)
    assert up == {"a": 0.0, "b": 1.0, "c": 1.0}


def test_dashboards_see_every_instance(run: Run) -> None:
    overview = json.loads((REPO / "grafana" / "dashboards" / "warpzip-overview.json").read_text())
    variables = {v["name"]: v for v in overview["templating"]["list"]}
    match = re.fullmatch(r"label_values\((.+), instance\)", variables["instance"]["query"]["query"])
    assert match, variables["instance"]
    selector = match.group(1).replace("$job", "warpzip")
    instances = run.prometheus.api("/api/v1/label/instance/values", **{"match[]": selector})
    assert sorted(instances) == sorted(f"127.0.0.1:{s.port}" for s in run.servers.values())
    # the request-rate panel sums over instances: it carries on after one of them left
    [panel] = [p for p in overview["panels"] if p["title"] == "Request rate by route and code"]
    expr = substitute(panel["targets"][0]["expr"], VARIABLES | {"__rate_interval": RATE[1:-1]})
    rates = {(s["metric"]["route"], s["metric"]["code"]): float(s["value"][1])
             for s in run.prometheus.query(expr, run.ended_at - 0.5)}
    assert rates.get(("/compress", "200"), 0) > 0, rates


def test_autoscaling_query_gives_each_pod_its_queue_depth(run: Run) -> None:
    """The prometheus-adapter rule's metricsQuery, filled in as the adapter does for the HPA."""
    config = yaml.safe_load(kube("prometheus-adapter.yaml")["data"]["config.yaml"])
    [rule] = config["rules"]
    expr = (rule["metricsQuery"].replace("<<.Series>>", rule["name"]["as"])
            .replace("<<.LabelMatchers>>", f'namespace="{NAMESPACE}",pod=~"b|c"').replace("<<.GroupBy>>", "pod"))
    depth = query(run.prometheus, expr, run.ended_at - 0.5)
    assert set(depth) == {"b", "c"} and all(math.isfinite(v) and v >= 0 for v in depth.values()), (expr, depth)
