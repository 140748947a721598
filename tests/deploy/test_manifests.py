"""Static checks of deploy/: the Kubernetes objects against the API schemas (kubernetes-validate,
strict), the Dockerfile (hadolint), the compose file (the compose-spec schema), the compose
Prometheus and HAProxy configurations (promtool, haproxy -c), and the facts that tie the files
together — the generated PrometheusRule is grafana/alerts.yml, selectors select the pods, the
port and the shutdown timeout agree everywhere, warpzip accepts the settings a pod gets.

The Prometheus Operator objects (PodMonitor, PrometheusRule) have no schema in
kubernetes-validate; their content is checked here field by field and, for the rules, by
equality with the promtool-tested rule file. Nothing here needs a Docker engine or a cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from app.config import parse_serve
from tests.deploy.shipped import (
    COMPOSE,
    DEPLOY,
    DOCKERFILE,
    KUBERNETES,
    Json,
    compose,
    container,
    dockerfile,
    image_env,
    kube,
    service_env,
)
from tests.harness import REPO, require_tool, start_server
from tests.harness.haproxy import HAPROXY_CFG, haproxy_env, server_variables
from warp.device.launch import stop_process

CORE_OBJECTS = ["deployment.yaml", "service.yaml", "pdb.yaml", "hpa.yaml", "prometheus-adapter.yaml",
                "dictionaries-pvc.yaml"]
# the oldest Kubernetes the manifests claim (docs/deploy.md) and the newest the validator knows
KUBERNETES_VERSIONS = ["1.29.0", kubernetes_validate.utils.latest_version()]
POD_LABELS = kube("deployment.yaml")["spec"]["template"]["metadata"]["labels"]


def venv_tool(name: str) -> str:
    """A binary a dev-extra package installs next to this interpreter, else one on PATH."""
    beside = Path(sys.executable).with_name(name)
    return str(beside) if beside.exists() else str(require_tool(name))


def run(*argv: str, env: dict[str, str] | None = None) -> str:
    completed = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=REPO, env=env)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    return output


# ---- Kubernetes ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", CORE_OBJECTS)
def test_object_validates_against_the_kubernetes_schema(name: str, version: str) -> None:
    kubernetes_validate.validate(kube(name), version, strict=True)


def test_kustomization_applies_every_manifest_of_the_application() -> None:
    """Everything but the adapter's rule, which belongs in the adapter's namespace."""
    listed = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())["resources"]
    present = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml", "prometheus-adapter.yaml"}
    assert sorted(listed) == sorted(present)


def test_prometheusrule_is_generated_from_the_alert_rules() -> None:
    run(sys.executable, str(DEPLOY / "build.py"), "--check")  # the committed file is what the script writes
    alerts = REPO / "grafana" / "alerts.yml"
    rule = kube("prometheusrule.yaml")
    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(alerts.read_text())


def test_selectors_select_the_pods_and_name_their_port() -> None:
    deployment = kube("deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    ports = {p["name"] for p in container()["ports"]}
    selectors = {
        "deployment": deployment["spec"]["selector"]["matchLabels"],
        "service": kube("service.yaml")["spec"]["selector"],
        "pdb": kube("pdb.yaml")["spec"]["selector"]["matchLabels"],
        "podmonitor": kube("podmonitor.yaml")["spec"]["selector"]["matchLabels"],
        "spread": pod["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"],
    }
    for what, selector in selectors.items():
        assert selector and selector.items() <= POD_LABELS.items(), what
    assert {p["targetPort"] for p in kube("service.yaml")["spec"]["ports"]} <= ports
    [endpoint] = kube("podmonitor.yaml")["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
    assert kube("podmonitor.yaml")["spec"]["jobLabel"] in POD_LABELS


def test_probes_ask_healthz() -> None:
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container()[probe]["httpGet"] == {"path": "/healthz", "port": "http"}, probe


def test_autoscaler_scales_the_deployment_on_the_adapter_metric() -> None:
    hpa = kube("hpa.yaml")["spec"]
    target = hpa["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", kube("deployment.yaml")["metadata"]["name"])
    assert "replicas" not in kube("deployment.yaml")["spec"]  # the HPA owns the count
    assert hpa["minReplicas"] >= 2 and kube("pdb.yaml")["spec"]["maxUnavailable"] < hpa["minReplicas"]
    [pods_metric] = [m["pods"] for m in hpa["metrics"] if m["type"] == "Pods"]
    [rule] = yaml.safe_load(kube("prometheus-adapter.yaml")["data"]["config.yaml"])["rules"]
    assert pods_metric["metric"]["name"] == rule["name"]["as"]
    assert rule["seriesQuery"].startswith(rule["name"]["as"] + "{")
    for placeholder in ("<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"):  # filled in by the adapter
        assert placeholder in rule["metricsQuery"], placeholder


def test_termination_grace_covers_the_shutdown_timeout() -> None:
    """SIGTERM comes after the preStop sleep; warpzip then takes up to --shutdown-timeout to finish
    in-flight requests, and its device a moment to stop: all of it within the grace period."""
    with pytest.MonkeyPatch.context() as env:
        for key, value in service_env().items():
            env.setenv(key, value)
        shutdown = parse_serve([]).shutdown_timeout
    pre_stop = int(container()["lifecycle"]["preStop"]["exec"]["command"][1])
    grace = kube("deployment.yaml")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert pre_stop + shutdown + 5 <= grace, (pre_stop, shutdown, grace)


# ---- the container ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["kubernetes", "compose"])
def test_warpzip_accepts_the_settings_a_container_gets(where: str) -> None:
    settings = service_env() if where == "kubernetes" else image_env() | compose()["services"]["warpzip"]["environment"]
    with pytest.MonkeyPatch.context() as env:
        for key, value in settings.items():
            if key.startswith("WARPZIP_"):
                env.setenv(key, str(value))
        config = parse_serve([])
    assert (config.host, config.port, config.device) == ("0.0.0.0", 8080, "embedded")
    assert str(config.root).startswith("/run/warpzip/")  # inside the writable mount, owned by warpzip


#: What a replica holds beyond its SVA heap and its device's stream contexts: the interpreter and
#: numpy twice (worker, device), loaded dictionaries, the engines' zstd contexts at common levels.
BASE_MEMORY = 256 << 20
UNITS = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def _bytes(limit: str) -> int:
    number = limit.rstrip("".join(UNITS))
    return int(number) * UNITS.get(limit[len(number):], 1)


@pytest.mark.parametrize("where", ["kubernetes", "compose"])
def test_the_memory_limit_covers_the_heap_and_the_stream_contexts(where: str) -> None:
    """The device's stream contexts (--stream-memory, 1 GiB by default) come on top of the worker's
    heap: a replica whose limit they could pass would be OOM-killed with every request in flight,
    where a stream over the bound gets 503."""
    if where == "kubernetes":
        settings, limit = service_env(), container()["resources"]["limits"]["memory"]
    else:
        service = compose()["services"]["warpzip"]
        settings, limit = image_env() | service["environment"], service["deploy"]["resources"]["limits"]["memory"]
    with pytest.MonkeyPatch.context() as env:
        for key, value in settings.items():
            if key.startswith("WARPZIP_"):
                env.setenv(key, str(value))
        config = parse_serve([])
    assert config.heap_size + config.stream_memory + BASE_MEMORY <= _bytes(str(limit)), (where, limit)


def mounted(mounts: list[Json], path: Path) -> str | None:
    """The name of the volume mounted at ``path`` or above it, if any."""
    for mount in mounts:
        if path == Path(mount["mountPath"]) or Path(mount["mountPath"]) in path.parents:
            return str(mount["name"])
    return None


def test_dictionaries_persist_on_one_volume_every_replica_shares() -> None:
    """The root filesystem is read-only and the user has no home: without a data directory on a
    writable volume, POST /dictionaries cannot store anything; and a directory per replica would
    let a dictionary made through one replica be unknown (404) behind another."""
    data_dir = Path(image_env()["WARPZIP_DATA_DIR"])
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WARPZIP_DATA_DIR", str(data_dir))
        assert parse_serve([]).data_dir == data_dir
    assert f"install -d -o warpzip -g warpzip -m 0700 {data_dir}" in DOCKERFILE.read_text()  # the user's, in the image

    volume = mounted(container()["volumeMounts"], data_dir)
    assert volume is not None, "the data directory is not on a volume in the Deployment"
    [spec] = [v for v in kube("deployment.yaml")["spec"]["template"]["spec"]["volumes"] if v["name"] == volume]
    claim = spec["persistentVolumeClaim"]["claimName"]  # not an emptyDir: the pods share it
    pvc = kube("dictionaries-pvc.yaml")
    assert pvc["metadata"]["name"] == claim and pvc["spec"]["accessModes"] == ["ReadWriteMany"]

    service = compose()["services"]["warpzip"]
    [shared] = [v for v in service["volumes"] if v.split(":")[1] == str(data_dir)]
    assert shared.split(":")[0] in compose()["volumes"]  # a named volume: one for all replicas


def test_the_port_agrees_everywhere() -> None:
    port = int(image_env()["WARPZIP_PORT"])
    services = compose()["services"]
    assert [rest for keyword, rest in dockerfile() if keyword == "EXPOSE"] == [str(port)]
    assert [p["containerPort"] for p in container()["ports"]] == [port]
    assert services["haproxy"]["environment"]["WARPZIP_DNS_NAME"] == f"warpzip:{port}"
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    [warpzip_job] = [job for job in prometheus["scrape_configs"] if job["job_name"] == "warpzip"]
    assert warpzip_job["dns_sd_configs"][0]["port"] == port


def test_dockerfile_is_slim_non_root_with_a_healthcheck_and_lints_clean() -> None:
    run(venv_tool("hadolint"), str(DOCKERFILE))
    instructions = dockerfile()
    runtime = [rest for keyword, rest in instructions if keyword == "FROM"][-1]
    assert runtime.split()[0].endswith("-slim"), runtime
    [user] = [rest for keyword, rest in instructions if keyword == "USER"]
    assert user.split(":")[0] not in ("root", "0")
    [healthcheck] = [rest for keyword, rest in instructions if keyword == "HEALTHCHECK"]
    assert "/healthz" in healthcheck
    # every source the build copies exists and gets through the build-context filter
    allowed = {line.strip("!/") for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
               if line.startswith("!")}
    sources = [word for keyword, rest in instructions if keyword == "COPY" and "--from" not in rest
               for word in rest.split()[:-1]]
    assert sources and all((REPO / s).exists() and s.strip("/") in allowed for s in sources), (sources, allowed)


def test_healthcheck_command_passes_on_a_healthy_instance_only(tmp_path: Path) -> None:
    """The image's HEALTHCHECK command, run here against a real instance (python = this interpreter)."""
    [healthcheck] = [rest for keyword, rest in dockerfile() if keyword == "HEALTHCHECK"]
    argv = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert argv[0] == "python"
    server = start_server(tmp_path / "root", tmp_path / "server.log", "--access-log", "0")
    env = dict(os.environ, WARPZIP_PORT=str(server.port))
    try:
        healthy = subprocess.run([sys.executable, *argv[1:]], env=env, capture_output=True, timeout=10)
    finally:
        stop_process(server.proc)
    gone = subprocess.run([sys.executable, *argv[1:]], env=env, capture_output=True, timeout=10)
    assert healthy.returncode == 0, healthy.stderr
    assert gone.returncode != 0


# ---- compose, and the HAProxy and Prometheus it runs ---------------------------------------------------------


def test_compose_file_follows_the_compose_spec_and_mounts_files_that_exist() -> None:
    run(sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE))
    services = compose()["services"]
    assert set(services) == {"warpzip", "haproxy", "prometheus", "grafana"}
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), (name, volume)
    assert not any("network_mode" in service for service in services.values())  # each its own identity
    password = services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert password.startswith("${GRAFANA_ADMIN_PASSWORD:?"), password  # from the environment, required
    [datasources] = [v for v in services["grafana"]["volumes"] if "provisioning/datasources" in v]
    provisioned = yaml.safe_load((COMPOSE.parent / datasources.split(":")[0]).read_text())
    assert provisioned["datasources"][0]["url"] == "http://prometheus:9090"  # the service, by its name
    assert parse_serve([], services["warpzip"]["environment"]).trusted_proxies == {"*"}
    grace = float(services["warpzip"]["stop_grace_period"].removesuffix("s"))
    assert grace > float(services["warpzip"]["environment"]["WARPZIP_SHUTDOWN_TIMEOUT"])
    assert services["haproxy"]["depends_on"]["warpzip"]["condition"] == "service_healthy"


def test_compose_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    """The files laid out as compose mounts them into /etc/prometheus, then promtool check config."""
    promtool = require_tool("promtool")
    for volume in compose()["services"]["prometheus"]["volumes"]:
        source, target, *_ = volume.split(":")
        if target.startswith("/etc/prometheus/"):
            shutil.copy(COMPOSE.parent / source, tmp_path / Path(target).name)
    out = run(promtool, "check", "config", "--lint=all", "--lint-fatal", str(tmp_path / "prometheus.yml"))
    assert "SUCCESS: 1 rule files found" in out, out


@pytest.mark.parametrize("mode", ["explicit servers", "compose DNS"])
def test_haproxy_config_is_valid(mode: str) -> None:
    haproxy = require_tool("haproxy")
    variables = (server_variables(["127.0.0.1:1", "127.0.0.1:2"]) if mode == "explicit servers"
                 else compose()["services"]["haproxy"]["environment"])
    env = haproxy_env(**variables)
    out = run(haproxy, "-c", "-f", str(HAPROXY_CFG), env=env)
    assert "Configuration file is valid" in out, out

