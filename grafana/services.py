"""What the render starts, as a deployment runs it: ``warpzip serve`` with its embedded device, and
a real Prometheus scraping it every second. Each process is appended to the caller's list as soon
as it exists, so the caller stops it by PID whatever happens next."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path

import yaml

from bench.server import free_port
from grafana.promql import api
from warp.device.launch import wait_until

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SCRAPE_SECONDS = 1


def start_server(tmp: Path, root: Path, procs: list[subprocess.Popen[bytes]], *options: str) -> str:
    """``warpzip serve`` as deployed (embedded device under ``root``, no access log, more
    ``options``); returns its base URL."""
    port = free_port()
    log = tmp / "server.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port", str(port),
                                 "--root", str(root), "--access-log", "0", *options],
                                stdout=sink, stderr=subprocess.STDOUT, cwd=REPO)
    procs.append(proc)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with urllib.request.urlopen(url + "/healthz", timeout=1) as response:
            return bool(response.status == 200)

    wait_until("the server", healthy, 30, log)
    return url


def prometheus_config(tmp: Path, target: str) -> Path:
    """grafana/prometheus.yml scraping ``target`` every second.

    The rule files are dropped: the panels do not read alert state, and relative rule paths would
    not resolve from the temp directory.
    """
    config = yaml.safe_load((HERE / "prometheus.yml").read_text())
    config["global"].update(scrape_interval=f"{SCRAPE_SECONDS}s", scrape_timeout=f"{SCRAPE_SECONDS}s",
                            evaluation_interval=f"{SCRAPE_SECONDS}s")
    config.pop("rule_files", None)
    [job] = config["scrape_configs"]
    [static] = job["static_configs"]
    static["targets"] = [target]
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start_prometheus(tmp: Path, target: str, procs: list[subprocess.Popen[bytes]]) -> str:
    """A real Prometheus with its TSDB in ``tmp``; returns its base URL once it has scraped twice.
    Its port is a free one: the Debian package may run a Prometheus on :9090."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp / "prometheus.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(["prometheus", f"--config.file={prometheus_config(tmp, target)}",
                                 f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=sink, stderr=subprocess.STDOUT, cwd=tmp)
    procs.append(proc)

    def scraped() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"prometheus exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        reply = api(base, "/api/v1/query", query='count_over_time(up{job="warpzip"}[1m])')
        result = reply["data"]["result"]
        return bool(result and float(result[0]["value"][1]) >= 2)

    wait_until("prometheus to scrape the server", scraped, 30, log)
    return base
