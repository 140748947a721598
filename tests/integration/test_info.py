"""``warpzip info`` against a live device under load: devices, sysfs attributes, queues with state,
PASID and counters, engines — what /sys/class/uacce plus debugfs show on a real machine."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from tests.harness import REPO, DeviceProc, start_device, wait_until
from warp import Runtime


def info(root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app", "info", "--root", str(root), *extra], cwd=REPO,
                          capture_output=True, text=True, timeout=30)


def test_info_shows_a_live_device_under_load(device: DeviceProc) -> None:
    rt = Runtime(device.root, driver="zip", heap_size=32 << 20)
    stop = threading.Event()
    data = b"under load " * 3000
    done = [0]

    def load() -> None:
        comp = rt.compressor(3)
        while not stop.is_set():
            comp.compress(data).release()
            done[0] += 1

    worker = threading.Thread(target=load)
    worker.start()
    snapshots: list[dict[str, Any]] = []
    try:
        wait_until(lambda: done[0] > 0, 10, "the first job")
        for _ in range(3):  # several snapshots while jobs run
            completed = info(device.root, "--json")
            assert completed.returncode == 0, completed.stderr
            (dev,) = json.loads(completed.stdout)
            snapshots.append(dev)
        text = info(device.root)
    finally:
        stop.set()
        worker.join()
        rt.close()
    for dev in snapshots:  # every one shows the device as it serves
        assert dev["sysfs"]["api"] == "hisi_qm_v2" and dev["sysfs"]["algorithms"] == ["zstd", "lz77_zstd"]
        started = [q for q in dev["queues"] if q["state"] == "STARTED"]
        assert {q["qc_type"] for q in started} == {"compress", "decompress"}
        assert len({q["pasid"] for q in started}) == 1 and started[0]["pasid"] >= 1
        assert any(q["submitted"] > 0 and q["completed_ok"] > 0 and q["batches"] > 0 for q in started)
        assert sum(e["jobs"] for e in dev["engines"]) > 0 and any(e["busy_ns"] > 0 for e in dev["engines"])
    # live counters, not one stale copy: each snapshot counts at least the jobs of the one before
    submitted = [sum(q["submitted"] for q in dev["queues"]) for dev in snapshots]
    engine_jobs = [sum(e["jobs"] for e in dev["engines"]) for dev in snapshots]
    assert submitted == sorted(submitted) and submitted[-1] > submitted[0], submitted
    assert engine_jobs == sorted(engine_jobs) and engine_jobs[-1] > engine_jobs[0], engine_jobs
    assert text.returncode == 0 and "warp_zip-0: api hisi_qm_v2" in text.stdout and "STARTED" in text.stdout


def test_info_without_a_device_says_so(tmp_path: Path) -> None:
    completed = info(tmp_path)
    assert completed.returncode == 1 and "no uacce devices" in completed.stdout


def test_info_on_a_root_whose_device_is_gone_says_so_and_fails(tmp_path: Path) -> None:
    """A killed device leaves its sysfs files and last counters behind: they must not read as a
    live device (issue 16). Before the kill the same command says running and exits 0."""
    dev = start_device(tmp_path / "root")
    try:
        live = info(dev.root, "--json")
        assert live.returncode == 0 and json.loads(live.stdout)[0]["running"] is True
    finally:
        dev.proc.kill()
        dev.proc.wait(timeout=10)
    assert (dev.root / "sys").is_dir()  # the files stay
    text = info(dev.root)
    assert text.returncode == 1 and "gone" in text.stdout, text.stdout
    as_json = info(dev.root, "--json")
    assert as_json.returncode == 1 and json.loads(as_json.stdout)[0]["running"] is False
