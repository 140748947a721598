"""``warpzip bench device`` (warp.tool.bench) against a real device process: ~1 s runs, checking
that the JSON figures are sane — never how fast anything is (benchmarks are not tests: the
machine is shared). Its arithmetic without a device is tests/unit/test_bench_device.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.harness import REPO, DeviceProc
from warp import abi
from warp.tool.bench import main

# Small corpus cut (0.5 MiB a file) and short runs: the point is the plumbing, not the figures.
QUICK = ["--seconds", "1", "--corpus-bytes", "2m", "--quiet"]


def run_tool(device: DeviceProc, tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / "bench.json"
    assert main(["--root", str(device.root), *QUICK, "--json", str(out), *args]) == 0
    report: dict[str, Any] = json.loads(out.read_text())
    check_report(report)
    return report


def check_report(report: dict[str, Any]) -> None:
    """Figures that must hold for any healthy run, whatever the machine's speed."""
    peer, inline = report["peer"], report["inline"]
    assert peer["label"] == "python-zstandard" and peer["jobs"] > 0 and peer["mb_s"] > 0
    assert inline["label"] == "inline warp.codec" and inline["jobs"] > 0 and inline["cpu_us_per_job"] > 0
    assert report["config"]["blocks"] > 0 and report["config"]["corpus_bytes"] > 0
    for m in [peer, inline, *report["runs"]]:
        assert m["errors"] == 0
        assert m["bytes_in"] == m["jobs"] * report["config"]["block_size"]
        assert 1.2 < m["ratio"] < 20, "real text and images compress; random bytes would not"
        lat = m["latency_us"]
        assert lat["count"] == m["jobs"] and 0 < lat["p50"] <= lat["p99"] <= lat["max"]
        assert m["mb_s"] == pytest.approx(m["bytes_in"] / m["seconds"] / 1e6, rel=1e-3)
    for m in report["runs"]:
        assert m["jobs"] > 0 and m["verified"] is True and m["fallback_jobs"] == 0
        bds = -(-report["config"]["block_size"] // abi.ZSTD_MAX_SIZE) if m.get("algorithm") == "lz77_zstd" else 1
        assert m["device_jobs"] == m["jobs"] * bds, "the per-queue DFX counter saw exactly our jobs (BDs)"
        assert m["engines"] == report["device"]["engines"] == len(m["engine_busy_s"])
        assert sum(m["engine_jobs"]) >= m["jobs"]
        assert 0 < m["engine_busy_ratio"] <= 1.1
        assert m["iopf"] >= 0 and m["iopf_per_job"] == pytest.approx(m["iopf"] / m["jobs"], abs=1e-4)
        assert m["mb_s_per_engine"] == pytest.approx(m["mb_s"] / m["engines"], rel=1e-3)
        assert m["per_engine_vs_bare"] == pytest.approx(m["mb_s_per_engine"] / peer["mb_s"], rel=1e-2)
        assert m["device_cpu_s"] > 0, "the device process burnt CPU on our jobs"
        assert m["device_cpu_us_per_job"] == pytest.approx(m["device_cpu_s"] * 1e6 / m["jobs"], rel=1e-3)
        assert m["cpu_vs_inline"] == pytest.approx(m["device_cpu_us_per_job"] / inline["cpu_us_per_job"], rel=1e-2)
        assert m["jobs_per_batch"] >= 1 and m["interrupts_per_job"] > 0
    head = report["headline"]
    assert head["run"] in [m["label"] for m in report["runs"]] and head["per_engine_vs_bare"] > 0
    assert head["cpu_vs_inline"] > 0
    assert head["inline_cpu_us_per_job"] == pytest.approx(inline["cpu_us_per_job"], rel=1e-3)
    json.dumps(report, allow_nan=False)


def test_async_run(device: DeviceProc, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = run_tool(device, tmp_path, "--depth", "8", "--block-size", "64k")
    (run,) = report["runs"]
    assert (run["mode"], run["depth"], run["prefault"]) == ("async", 8, True)
    assert run["iopf"] == 0, "prefaulted pool buffers never fault on the device"
    assert report["device"] == {**report["device"], "embedded": False, "engines": 1, "name": "warp_zip-0"}
    printed = capsys.readouterr()
    assert "python-zstandard" in printed.out and "device async d=8 prefault" in printed.out
    assert "inline warp.codec" in printed.out and "the same zstd call inline" in printed.out
    assert "headline: device" in printed.out and "MB/s per engine" in printed.out
    assert printed.err == ""  # --quiet: no progress


def test_sync_run_forces_depth_one(device: DeviceProc, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = run_tool(device, tmp_path, "--sync", "--depth", "16", "--block-size", "8k")
    (run,) = report["runs"]
    assert (run["mode"], run["depth"]) == ("sync", 1)
    assert report["config"]["block_size"] == 8192
    assert "depth forced to 1" in capsys.readouterr().err


def test_batch_run(device: DeviceProc, tmp_path: Path) -> None:
    """--batch: depth jobs per compress_many, each job's latency that of its batch."""
    report = run_tool(device, tmp_path, "--batch", "--depth", "4", "--block-size", "4k")
    (run,) = report["runs"]
    assert (run["mode"], run["depth"], run["label"]) == ("batch", 4, "device batch d=4 prefault")
    assert run["jobs"] % 4 == 0


def test_prefault_versus_no_prefault(device: DeviceProc, tmp_path: Path) -> None:
    report = run_tool(device, tmp_path, "--compare-prefault", "--depth", "4")
    pf, nopf = report["runs"]
    assert (pf["prefault"], nopf["prefault"]) == (True, False)
    assert pf["iopf"] == 0
    assert nopf["iopf_per_job"] > pf["iopf_per_job"], "untouched pool pages fault on the device"
    assert nopf["heap_prefaults"] == 0 and pf["heap_prefaults"] > 0  # the CPU took those faults instead
    assert nopf["fault_pages"] >= nopf["iopf"] > 0


def test_depth_sweep(device: DeviceProc, tmp_path: Path) -> None:
    report = run_tool(device, tmp_path, "--sweep-depth", "1,2", "--depth", "32")
    assert [run["depth"] for run in report["runs"]] == [1, 2]
    assert report["config"]["depths"] == [1, 2]
    assert {run["label"] for run in report["runs"]} == {"device async d=1 prefault", "device async d=2 prefault"}


def device_processes(marker: str) -> list[str]:
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    return [line for line in ps.splitlines() if "warp.device" in line and marker in line]


def test_embedded_device_through_warpzip_cli(tmp_path: Path) -> None:
    """No --root: the tool starts its own device (2 engines), shows progress on a non-TTY stderr
    as plain lines, and stops the device by PID — nothing is left running, the root is gone."""
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "app", "bench", "device", "--seconds", "0.5", "--corpus-bytes", "1m",
                           "--engines", "2", "--depth", "4", "--repeat", "2", "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    check_report(report)
    dev = report["device"]
    assert dev["embedded"] is True and dev["engines"] == 2 and report["config"]["queues_per_direction"] == 2
    assert len(report["peer"]["repeats_mb_s"]) == len(report["runs"][0]["repeats_mb_s"]) == 2
    assert "[python-zstandard]" in proc.stderr and "\r" not in proc.stderr
    assert f"stopped device pid {dev['pid']}" in proc.stderr
    assert not Path(dev["root"]).exists()
    assert not device_processes(dev["root"]), "the embedded device outlived the benchmark"
    with pytest.raises(ProcessLookupError):
        os.kill(dev["pid"], 0)


@pytest.mark.parametrize("mode", ["--sync", "--async"])
def test_compare_lz77_adds_an_lz77_zstd_run_beside_zstd(device: DeviceProc, tmp_path: Path, mode: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """--compare-lz77: the same blocks through lz77_zstd, with the software stage's CPU reported,
    and the headline still zstd's."""
    report = run_tool(device, tmp_path, mode, "--depth", "2", "--block-size", "192k", "--compare-lz77")
    zstd, lz77 = report["runs"]
    assert lz77["label"].startswith("lz77_zstd device") and lz77["jobs"] > 0 and lz77["verified"] is True
    assert lz77["software_stage_cpu_ns"] > 0 and 0 < lz77["software_stage_cpu_share"] <= 1
    assert lz77["ratio"] > 1 and lz77["errors"] == 0
    assert report["headline"]["run"] == zstd["label"]
    assert "software stage (entropy coding + frame)" in capsys.readouterr().out
