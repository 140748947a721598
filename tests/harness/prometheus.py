"""A real Prometheus on a loopback port, and its HTTP API as the dashboards' tests query it."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.harness import free_port, wait_until
from warp.device.launch import stop_process


@dataclass
class Prometheus:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def api(self, path: str, **params: str) -> Any:
        """The ``data`` of a successful API reply (``/api/v1/...``); fails the test on any other."""
        with urllib.request.urlopen(f"{self.url}{path}?{urllib.parse.urlencode(params)}", timeout=10) as response:
            reply = json.loads(response.read())
        assert reply["status"] == "success", (path, params, reply)
        return reply["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """The series of an instant query at ``at`` (default: now), which must give a vector."""
        data = self.api("/api/v1/query", query=expr, time=f"{time.time() if at is None else at:.3f}")
        assert data["resultType"] == "vector", (expr, data)
        return list(data["result"])


def start_prometheus(binary: str, config: Path, tmp: Path) -> Prometheus:
    """Prometheus with ``config`` and its database under ``tmp``; returns once it is ready."""
    port = free_port()
    log = tmp / "prometheus.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=tmp)
    prometheus = Prometheus(f"http://127.0.0.1:{port}", proc, log)

    def ready() -> bool:
        assert proc.poll() is None, log.read_text()[-3000:]
        with urllib.request.urlopen(prometheus.url + "/-/ready", timeout=2) as response:
            return bool(response.status == 200)

    try:
        wait_until(ready, 30, "prometheus to be ready", log)
    except BaseException:
        stop_process(proc)
        raise
    return prometheus
