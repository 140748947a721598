"""HAProxy as shipped (deploy/haproxy/haproxy.cfg) in front of loopback servers, for the deploy tests.

The configuration file is never copied or edited: every site-specific value in it is an
environment variable, so a test only chooses the variables (listen ports, server addresses).
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.harness import REPO, free_port, wait_until
from warp.device.launch import stop_process

HAPROXY_CFG = REPO / "deploy" / "haproxy" / "haproxy.cfg"


@dataclass
class LoadBalancer:
    url: str
    stats: str  # the stats frontend: /metrics (Prometheus exporter), /stats, /healthz
    proc: subprocess.Popen[bytes]
    log: Path

    def servers(self) -> dict[str, dict[str, str]]:
        """HAProxy's stats row of each server of the warpzip backend (status UP/DOWN/..., check_status,
        wretr = retries, wredis = redispatches ...), by server name."""
        with urllib.request.urlopen(self.stats + "/stats;csv", timeout=2) as response:
            text = response.read().decode().removeprefix("# ")
        return {row["svname"]: row for row in csv.DictReader(io.StringIO(text))
                if row["pxname"] == "warpzip" and row["svname"] not in ("FRONTEND", "BACKEND")}


def haproxy_env(**variables: str) -> dict[str, str]:
    """This process's environment without its WARPZIP_* variables, plus ``variables`` for
    deploy/haproxy/haproxy.cfg (unset ones take the file's defaults)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARPZIP_")}
    env.update(variables)
    return env


def server_variables(servers: list[str]) -> dict[str, str]:
    """WARPZIP_SERVER_1..n: the explicit host:port of each instance."""
    return {f"WARPZIP_SERVER_{i}": address for i, address in enumerate(servers, 1)}


def start_haproxy(haproxy: str, tmp: Path, servers: list[str]) -> LoadBalancer:
    """haproxy -db (foreground, no master: one PID to stop) with the shipped file; returns once
    HAProxy answers and has checked every server at least once."""
    bind, stats = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    log = tmp / "haproxy.log"
    env = haproxy_env(WARPZIP_LB_BIND=bind, WARPZIP_LB_STATS=stats, **server_variables(servers))
    with log.open("wb") as sink:
        proc = subprocess.Popen([haproxy, "-db", "-f", str(HAPROXY_CFG)], env=env,
                                stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    lb = LoadBalancer(f"http://{bind}", f"http://{stats}", proc, log)

    def checked() -> bool:
        assert proc.poll() is None, log.read_text()[-3000:]
        rows = lb.servers().values()
        return len(rows) == len(servers) and all(row["check_status"] not in ("", "INI") for row in rows)

    try:
        wait_until(checked, 15, "haproxy to check its servers", log)
    except BaseException:
        stop_process(proc)
        raise
    return lb
