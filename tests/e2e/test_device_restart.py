"""The embedded device killed under load: requests keep succeeding on the cpu driver, the service
restarts the device, and the workers move back onto it by themselves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import zstandard

from tests.harness import start_server
from tests.harness.metrics import metric
from warp.device.launch import stop_process

pytestmark = pytest.mark.e2e


def device_pids(root: Path) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"warp.device --root {root} "], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def health(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url + "/healthz", timeout=5) as response:
        doc: dict[str, object] = json.loads(response.read())
        return doc


def compress(url: str, data: bytes) -> bytes:
    request = urllib.request.Request(url + "/compress", data=data, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return bytes(zstandard.decompress(response.read()))


@pytest.mark.parametrize("workers", [1, 2])
def test_killed_device_is_restarted_and_used_again(tmp_path: Path, workers: int) -> None:
    root = tmp_path / "root"
    srv = start_server(root, tmp_path / "server.log", "--workers", str(workers), "--access-log", "0")
    try:
        data = b"restart me " * 4000
        assert compress(srv.url, data) == data
        assert metric(srv.url, "warpzip_device_restarts_total") == 0
        (first,) = device_pids(root)
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 30
        served_meanwhile = 0
        while time.monotonic() < deadline:
            assert compress(srv.url, data) == data  # never an error while the device is away
            served_meanwhile += 1
            pids = device_pids(root)
            if pids and pids != [first] and all(health(srv.url)["driver"] == "zip" for _ in range(4)):
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"the device did not come back into use: {srv.log.read_text()[-2000:]}")
        assert served_meanwhile > 0
        assert compress(srv.url, data) == data
        assert "restarting it" in srv.log.read_text()
        assert metric(srv.url, "warpzip_device_restarts_total") == 1  # the parent's count, in a worker's scrape
    finally:
        stop_process(srv.proc)
    assert device_pids(root) == []
