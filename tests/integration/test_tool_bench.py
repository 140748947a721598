"""``warpzip bench device`` (warp.tool.bench): its sans-I/O arithmetic, then ~1 s runs against a
real device process, checking that the JSON figures are sane — never how fast anything is
(benchmarks are not tests: the machine is shared)."""

from __future__ import annotations

import bz2
import io
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import REPO, DeviceProc
from warp.tool import bench, stats
from warp.tool.stats import DeviceCounters, Latency, Measurement

# Small corpus cut (0.5 MiB a file) and short runs: the point is the plumbing, not the figures.
QUICK = ["--seconds", "1", "--corpus-bytes", "2m", "--quiet"]


# ---- sans-I/O: parsing, percentiles, derived figures, rendering ------------------------------
@pytest.mark.parametrize(("text", "size"), [("4k", 4096), ("8K", 8192), ("64KiB", 65536), ("1m", 1 << 20),
                                            ("1MiB", 1 << 20), ("65536", 65536), (" 2 kb ", 2048), ("1g", 1 << 30)])
def test_parse_size(text: str, size: int) -> None:
    assert stats.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "k", "4x", "-4k", "0", "1.5k"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        stats.parse_size(text)


def test_parse_depths() -> None:
    assert stats.parse_depths("1,2,4,8,16,32") == [1, 2, 4, 8, 16, 32]
    assert stats.parse_depths("4, 1,4,") == [4, 1]
    for bad in ("", "0", "1,-2", "a"):
        with pytest.raises(ValueError):
            stats.parse_depths(bad)


def test_human_size() -> None:
    assert [stats.human_size(n) for n in (65536, 1 << 20, 1000, 3 << 30)] == ["64 KiB", "1 MiB", "1000 B", "3 GiB"]


def test_percentile_matches_numpy() -> None:
    rng = np.random.default_rng(7)
    for n in (1, 2, 3, 10, 101, 1000):
        values = sorted(rng.integers(0, 10_000, n).tolist())
        for q in (0, 1, 50, 90, 99, 99.9, 100):
            assert stats.percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_edges() -> None:
    assert math.isnan(stats.percentile([], 50))
    assert stats.percentile([5], 99) == 5
    assert stats.percentile(list(range(1, 101)), 50) == pytest.approx(50.5)
    with pytest.raises(ValueError):
        stats.percentile([1], 101)


def test_latency_summary_in_microseconds() -> None:
    lat = Latency.from_ns([3000, 1000, 2000, 4000])  # unsorted on purpose
    assert lat.count == 4
    assert lat.p50_us == pytest.approx(2.5)
    assert lat.mean_us == pytest.approx(2.5)
    assert lat.max_us == pytest.approx(4.0)
    assert lat.p50_us <= lat.p99_us <= lat.max_us
    assert math.isnan(Latency.from_ns([]).p99_us)


def counters(iopf: int, jobs: int, pages: int, busy: tuple[int, ...], ejobs: tuple[int, ...]) -> DeviceCounters:
    return DeviceCounters(iopf=iopf, queue_jobs=jobs, fault_pages=pages, engine_busy_ns=busy, engine_jobs=ejobs)


def test_counter_deltas() -> None:
    before = counters(10, 100, 7, (1_000, 2_000), (40, 60))
    after = counters(42, 1100, 39, (501_000, 302_000), (540, 660))
    delta = after - before
    assert delta == counters(32, 1000, 32, (500_000, 300_000), (500, 600))
    assert delta.engines == 2
    with pytest.raises(ValueError):
        _ = after - counters(0, 0, 0, (0,), (0,))


def measurement(**kw: Any) -> Measurement:
    base: dict[str, Any] = {"label": "x", "jobs": 1000, "bytes_in": 64_000_000, "bytes_out": 16_000_000,
                            "wall_ns": 2 * stats.NS, "cpu_ns": stats.NS, "latency": Latency.from_ns([1000, 3000])}
    base.update(kw)
    return Measurement(**base)


def test_derived_figures() -> None:
    peer = measurement(label="python-zstandard")
    assert peer.mb_s == pytest.approx(32.0)
    assert peer.jobs_s == pytest.approx(500.0)
    assert peer.ratio == pytest.approx(4.0)
    assert peer.cpu_rate == pytest.approx(0.5)
    assert peer.iopf_per_job is None and peer.busy_ratio is None and peer.engines is None
    dev = measurement(label="device", bytes_in=128_000_000, mode="async", depth=32, prefault=False,
                      counters=counters(250, 1000, 250, (stats.NS, stats.NS // 2), (600, 400)))
    assert dev.engines == 2
    assert dev.iopf_per_job == pytest.approx(0.25)
    assert dev.busy_ratio == pytest.approx(0.375)  # 1.5 s busy over 2 engines x 2 s
    assert dev.mb_s_per_engine == pytest.approx(32.0)
    assert dev.vs(peer) == pytest.approx(1.0)
    assert stats.best([peer, dev]) is peer  # equal per engine: the first wins; a tie is no headline claim
    assert stats.best([measurement(bytes_in=1), dev]) is dev


def test_zero_and_missing_values() -> None:
    empty = measurement(jobs=0, bytes_in=0, bytes_out=0, wall_ns=0, latency=Latency.from_ns([]),
                        counters=counters(0, 0, 0, (0,), (0,)))
    assert empty.mb_s == 0 and empty.jobs_s == 0 and math.isnan(empty.ratio)
    assert math.isnan(empty.iopf_per_job or math.nan)
    d = stats.measurement_dict(empty, measurement())
    json.dumps(d, allow_nan=False)  # NaN never reaches the JSON
    assert d["ratio"] is None and d["latency_us"]["p50"] is None and d["iopf_per_job"] is None
    with pytest.raises(ValueError):
        stats.best([])


def test_merge_repeats() -> None:
    one = measurement(jobs=2, bytes_in=10, bytes_out=5, wall_ns=stats.NS, cpu_ns=10, samples=(1000, 3000),
                      latency=Latency.from_ns([1000, 3000]), counters=counters(1, 2, 1, (100,), (2,)),
                      extra={"verified": True, "heap_prefaults": 4, "error_statuses": {"0x10": 1}})
    two = measurement(jobs=1, bytes_in=20, bytes_out=5, wall_ns=stats.NS, cpu_ns=30, samples=(2000,),
                      latency=Latency.from_ns([2000]), counters=counters(0, 1, 0, (50,), (1,)),
                      extra={"verified": True, "heap_prefaults": 0, "error_statuses": {"0x10": 2}})
    m = stats.merge([one, two])
    assert (m.jobs, m.bytes_in, m.bytes_out, m.wall_ns, m.cpu_ns) == (3, 30, 10, 2 * stats.NS, 40)
    assert m.latency == Latency.from_ns([1000, 2000, 3000])
    assert m.counters == counters(1, 3, 1, (150,), (3,))
    assert m.extra == {"verified": True, "heap_prefaults": 4, "error_statuses": {"0x10": 3}}
    assert m.parts == pytest.approx((10e-6, 20e-6))
    assert stats.measurement_dict(m)["repeats_mb_s"] == [0.0, 0.0]  # rounded to 3 digits
    assert stats.merge([one]) is one
    bad = measurement(counters=counters(0, 1, 0, (1,), (1,)), extra={"verified": False})
    assert stats.merge([one, bad]).extra["verified"] is False
    with pytest.raises(ValueError):
        stats.merge([one, measurement()])  # device and peer
    with pytest.raises(ValueError):
        stats.merge([])


def test_cpu_per_job_against_inline() -> None:
    """Device rows count the device process's CPU, the others their own; merge sums it."""
    inline = measurement(label="inline warp.codec", jobs=1000, cpu_ns=20_000_000)
    dev = measurement(jobs=1000, cpu_ns=5_000_000, device_cpu_ns=30_000_000,
                      counters=counters(0, 1000, 0, (stats.NS,), (1000,)))
    assert inline.cpu_us_per_job == pytest.approx(20.0) and dev.cpu_us_per_job == pytest.approx(30.0)
    assert dev.cpu_vs(inline) == pytest.approx(1.5)
    assert stats.merge([dev, dev]).device_cpu_ns == 60_000_000
    assert stats.merge([dev, measurement(counters=dev.counters)]).device_cpu_ns is None  # unknown stays unknown
    d = stats.measurement_dict(dev, None, inline)
    assert d["device_cpu_us_per_job"] == pytest.approx(30.0) and d["cpu_vs_inline"] == pytest.approx(1.5)
    assert "cpu_vs_inline" not in stats.measurement_dict(inline, None, inline)
    rows = stats.table_rows(measurement(label="python-zstandard"), [dev], inline)
    assert [row[0] for row in rows] == ["python-zstandard", "inline warp.codec", "x"]
    assert rows[1][-2] == "-" and rows[2][-2] == "1.50x" and rows[2][-3] == "30.0"
    assert "1.50x the same zstd call inline" in stats.cpu_headline(inline, dev)


def test_measurement_dict_fields() -> None:
    peer = measurement()
    dev = measurement(prefault=True, counters=counters(0, 1000, 0, (stats.NS,), (1000,)), extra={"verified": True})
    d = stats.measurement_dict(dev, peer)
    for key in ("mb_s", "jobs_s", "ratio", "latency_us", "iopf_per_job", "engine_busy_ratio", "mb_s_per_engine",
                "per_engine_vs_bare", "engine_us_per_job", "prefault", "verified"):
        assert key in d
    assert d["engine_us_per_job"] == pytest.approx(1000.0)
    assert "iopf_per_job" not in stats.measurement_dict(peer)


def test_render_table_aligns() -> None:
    text = stats.render_table(["run", "MB/s"], [["peer", "1.0"], ["device long label", "123.4"]])
    lines = text.splitlines()
    assert len(lines) == 4 and set(lines[1]) <= {"-", " "}
    assert len({len(line) for line in lines}) == 1  # right-aligned numbers end in the same column
    assert lines[2].startswith("peer ") and lines[3].endswith("123.4")
    md = stats.render_markdown(["a", "b"], [["x", "1"]])
    assert md.splitlines() == ["| a | b |", "|---|---:|", "| x | 1 |"]


def test_table_rows_and_headline() -> None:
    peer = measurement(label="python-zstandard")
    dev = measurement(label="device async d=32 prefault", counters=counters(0, 1000, 0, (stats.NS,), (1000,)))
    rows = stats.table_rows(peer, [dev])
    assert len(rows) == 2 and all(len(row) == len(stats.HEADERS) for row in rows)
    assert rows[0][6:8] == ["-", "-"] and rows[0][-1] == "-"
    assert rows[1][6] == "0.000" and rows[1][7] == "50%" and rows[1][-1] == "1.00x"
    assert "1.00x bare python-zstandard" in stats.headline(peer, dev)


def test_progress_formats_and_rate_limits() -> None:
    line = stats.format_progress("device", 1.0, 5.0, 100, 6_553_600)
    assert line.startswith("[device]") and "100 jobs" in line and "6.6 MB/s" in line
    assert stats.rate_limited(2.0, 1.0, 1.0) and not stats.rate_limited(1.5, 1.0, 1.0)


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_display_modes() -> None:
    done = measurement(label="device")
    tty = FakeTty()
    progress = bench.Progress(tty)
    progress.start("device", 5.0)
    progress.last = -10.0  # an update is due
    progress.update(10, 655_360)
    progress.finish(done)
    assert tty.getvalue().startswith("\r[device]") and tty.getvalue().count("\n") == 1  # one line, rewritten
    plain = io.StringIO()
    progress = bench.Progress(plain)
    progress.start("device", 5.0)
    progress.last = -10.0
    progress.update(10, 655_360)
    progress.finish(done)
    assert "\r" not in plain.getvalue() and plain.getvalue().count("\n") == 2
    quiet = bench.Progress(None)
    quiet.start("device", 5.0)
    quiet.update(1, 1)
    quiet.finish(done)  # nothing to write to, nothing raised


def test_blocks_are_consecutive_interleaved_slices(tmp_path: Path) -> None:
    a, b = bytes(range(256)) * 64, bytes(reversed(range(256))) * 64  # 16 KiB each
    (tmp_path / "a.bz2").write_bytes(bz2.compress(a))
    (tmp_path / "b.bz2").write_bytes(bz2.compress(b))
    blocks = bench.load_blocks(tmp_path, 4096, 16384, skip=1024)
    # 8 KiB a file (after the 1 KiB skip), cut in 4 KiB slices, files interleaved
    assert blocks == [a[1024:5120], b[1024:5120], a[5120:9216], b[5120:9216]]
    with pytest.raises(FileNotFoundError):
        bench.load_blocks(tmp_path / "none", 4096, 16384)


def test_options() -> None:
    opts = bench.parse_options(["--sync", "--depth", "8"])
    assert opts.depths == (1,) and opts.mode == "sync" and any("depth forced to 1" in n for n in opts.notes)
    opts = bench.parse_options(["--sweep-depth", "1,2,4", "--compare-prefault", "--engines", "2"])
    assert opts.depths == (1, 2, 4) and opts.prefaults == (True, False) and opts.queues == 2
    assert bench.parse_options(["--block-size", "8k", "--no-prefault"]).block_size == 8192
    assert bench.parse_options([]).prefaults == (True,)
    for bad in (["--sync", "--sweep-depth", "1,2"], ["--block-size", "x"], ["--seconds", "0"], ["--depth", "0"]):
        with pytest.raises(SystemExit):
            bench.parse_options(bad)


# ---- against a real device ---------------------------------------------------------------------
def run_tool(device: DeviceProc, tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / "bench.json"
    assert bench.main(["--root", str(device.root), *QUICK, "--json", str(out), *args]) == 0
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
        assert m["device_jobs"] == m["jobs"], "the per-queue DFX counter saw exactly our jobs"
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


def test_device_cpu_of_a_process(tmp_path: Path) -> None:
    """/proc/<pid>/stat user + system time: this process's grows as it burns CPU."""
    before = bench.process_cpu_ns(os.getpid())
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:
        pass
    assert bench.process_cpu_ns(os.getpid()) - before >= 0.02 * stats.NS


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


def test_warpzip_bench_dispatch(capsys: pytest.CaptureFixture[str]) -> None:
    from app.__main__ import main as warpzip

    with pytest.raises(SystemExit) as http:
        warpzip(["bench", "http", "--help"])
    assert http.value.code == 0 and "python -m bench" in capsys.readouterr().out
    with pytest.raises(SystemExit) as device:
        warpzip(["bench", "device", "--help"])
    assert device.value.code == 0 and "--sweep-depth" in capsys.readouterr().out
    assert warpzip(["bench"]) == 2 and "bench {device|http}" in capsys.readouterr().err
