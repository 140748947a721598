"""The combined run of issue 9: wrk load while the device hangs past the job timeout (the workers
reset their queues and re-run the jobs on the cpu), takes a burst of hardware errors (each resets
the controller, which stops every queue: the workers re-create theirs), suffers an I/O page-fault
storm, isolates itself when a reset fails, and is killed (the service starts a new one, which is
not isolated). Every request gets a correct frame (or a clean 503) and every request the service
answered reached the client.

The service is stopped (SIGTERM) while wrk still runs, so no request is left half-way when wrk
ends: every one the service answered was read by wrk, and the rest were refused at connect.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.harness import device_cli, require_tool, start_server
from tests.harness.metrics import metric
from tests.harness.wrk import finish, start_wrk
from warp.device.launch import stop_process

pytestmark = pytest.mark.e2e


def device_pid(root: Path) -> int:
    out = subprocess.run(["pgrep", "-f", f"warp.device --root {root} "], capture_output=True, text=True)
    (pid,) = map(int, out.stdout.split())
    return pid


def test_faults_under_wrk_lose_nothing(corpus: dict[str, Path], tmp_path: Path) -> None:
    wrk = require_tool("wrk")
    body = tmp_path / "body.bin"
    with corpus["xml"].open("rb") as f:
        body.write_bytes(f.read(16 << 10))
    root = tmp_path / "root"
    log = tmp_path / "server.log"
    srv = start_server(root, log, "--workers", "2", "--job-timeout", "1", "--access-log", "1")
    try:
        load = start_wrk(wrk, f"{srv.url}/compress?level=3", body, seconds=20, connections=16)
        time.sleep(1.5)
        # past --job-timeout: the workers reset their queues and re-run the jobs on the cpu
        assert device_cli(root, "inject", "hang", "--seconds", "2.5").returncode == 0
        time.sleep(3)
        # each resets the controller: the jobs re-run on the cpu, the workers re-create their queues
        assert device_cli(root, "inject", "hw-error", "--count", "3").returncode == 0
        time.sleep(3)
        assert device_cli(root, "inject", "iopf-storm").returncode == 0  # every page reclaimed: faults, no errors
        time.sleep(2)
        assert device_cli(root, "inject", "reset-fail").returncode == 0
        assert device_cli(root, "reset").returncode == 1  # the reset fails: isolated, the workers stay on the cpu
        assert (root / "sys/class/uacce/warp_zip-0/isolate").read_text().strip() == "1"
        time.sleep(1)
        pid = device_pid(root)
        subprocess.run(["kill", "-KILL", str(pid)], check=True)  # the service starts a new one, not isolated
        time.sleep(3)
        resets = metric(srv.url, "warpzip_queue_resets_total")
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(30) == 0
        result = finish(load, 60)
    finally:
        stop_process(srv.proc)
    text = log.read_text()
    served = len(re.findall(r'"POST /compress\?level=3 HTTP/1.1" 200 ', text))
    unavailable = len(re.findall(r'"POST /compress\?level=3 HTTP/1.1" 503 ', text))
    print(result.output, f"served={served} unavailable={unavailable}")
    assert result.bad == 0, result.output  # no corrupted response, no error but a clean 503, ever
    assert result.requests > 0 and result.requests == served + unavailable, (served, unavailable, result.output)
    assert result.non2xx == unavailable  # the only errors allowed are clean 503s
    assert result.timeout == 0, result.output  # nothing hung
    assert "restarting it" in text
    assert resets >= 1, "the hang outlived --job-timeout: some worker must have reset its queues"
