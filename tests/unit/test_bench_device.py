"""``warpzip bench device`` (warp.tool.bench) without a device: parsing, percentiles, derived
figures, merging repeats, the report, the progress display and the corpus blocks. The runs
against a real device process are tests/integration/test_tool_bench.py."""

from __future__ import annotations

import bz2
import io
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from warp.tool import corpus, units
from warp.tool.bench import device, report
from warp.tool.bench.measurement import DeviceCounters, Latency, Measurement, best, merge, percentile
from warp.tool.bench.options import parse_depths, parse_options
from warp.tool.bench.progress import Progress, format_progress, rate_limited
from warp.tool.units import NS


@pytest.mark.parametrize(("text", "size"), [("4k", 4096), ("8K", 8192), ("64KiB", 65536), ("1m", 1 << 20),
                                            ("1MiB", 1 << 20), ("65536", 65536), (" 2 kb ", 2048), ("1g", 1 << 30)])
def test_parse_size(text: str, size: int) -> None:
    assert units.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "k", "4x", "-4k", "0", "1.5k"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        units.parse_size(text)


def test_parse_depths() -> None:
    assert parse_depths("1,2,4,8,16,32") == [1, 2, 4, 8, 16, 32]
    assert parse_depths("4, 1,4,") == [4, 1]
    for bad in ("", "0", "1,-2", "a"):
        with pytest.raises(ValueError):
            parse_depths(bad)


def test_human_size() -> None:
    assert [units.human_size(n) for n in (65536, 1 << 20, 1000, 3 << 30)] == ["64 KiB", "1 MiB", "1000 B", "3 GiB"]


def test_percentile_matches_numpy() -> None:
    rng = np.random.default_rng(7)
    for n in (1, 2, 3, 10, 101, 1000):
        values = sorted(rng.integers(0, 10_000, n).tolist())
        for q in (0, 1, 50, 90, 99, 99.9, 100):
            assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_edges() -> None:
    assert math.isnan(percentile([], 50))
    assert percentile([5], 99) == 5
    assert percentile(list(range(1, 101)), 50) == pytest.approx(50.5)
    with pytest.raises(ValueError):
        percentile([1], 101)


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
                            "wall_ns": 2 * NS, "cpu_ns": NS, "latency": Latency.from_ns([1000, 3000])}
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
                      counters=counters(250, 1000, 250, (NS, NS // 2), (600, 400)))
    assert dev.engines == 2
    assert dev.iopf_per_job == pytest.approx(0.25)
    assert dev.busy_ratio == pytest.approx(0.375)  # 1.5 s busy over 2 engines x 2 s
    assert dev.mb_s_per_engine == pytest.approx(32.0)
    assert dev.vs(peer) == pytest.approx(1.0)
    assert best([peer, dev]) is peer  # equal per engine: the first wins; a tie is no headline claim
    assert best([measurement(bytes_in=1), dev]) is dev


def test_zero_and_missing_values() -> None:
    empty = measurement(jobs=0, bytes_in=0, bytes_out=0, wall_ns=0, latency=Latency.from_ns([]),
                        counters=counters(0, 0, 0, (0,), (0,)))
    assert empty.mb_s == 0 and empty.jobs_s == 0 and math.isnan(empty.ratio)
    assert math.isnan(empty.iopf_per_job or math.nan)
    d = report.measurement_dict(empty, measurement())
    json.dumps(d, allow_nan=False)  # NaN never reaches the JSON
    assert d["ratio"] is None and d["latency_us"]["p50"] is None and d["iopf_per_job"] is None
    with pytest.raises(ValueError):
        best([])


def test_merge_repeats() -> None:
    one = measurement(jobs=2, bytes_in=10, bytes_out=5, wall_ns=NS, cpu_ns=10, samples=(1000, 3000),
                      latency=Latency.from_ns([1000, 3000]), counters=counters(1, 2, 1, (100,), (2,)),
                      extra={"verified": True, "heap_prefaults": 4, "error_statuses": {"0x10": 1}})
    two = measurement(jobs=1, bytes_in=20, bytes_out=5, wall_ns=NS, cpu_ns=30, samples=(2000,),
                      latency=Latency.from_ns([2000]), counters=counters(0, 1, 0, (50,), (1,)),
                      extra={"verified": True, "heap_prefaults": 0, "error_statuses": {"0x10": 2}})
    m = merge([one, two])
    assert (m.jobs, m.bytes_in, m.bytes_out, m.wall_ns, m.cpu_ns) == (3, 30, 10, 2 * NS, 40)
    assert m.latency == Latency.from_ns([1000, 2000, 3000])
    assert m.counters == counters(1, 3, 1, (150,), (3,))
    assert m.extra == {"verified": True, "heap_prefaults": 4, "error_statuses": {"0x10": 3}}
    assert m.parts == pytest.approx((10e-6, 20e-6))
    assert report.measurement_dict(m)["repeats_mb_s"] == [0.0, 0.0]  # rounded to 3 digits
    assert merge([one]) is one
    bad = measurement(counters=counters(0, 1, 0, (1,), (1,)), extra={"verified": False})
    assert merge([one, bad]).extra["verified"] is False
    with pytest.raises(ValueError):
        merge([one, measurement()])  # device and peer
    with pytest.raises(ValueError):
        merge([])


def test_merge_combines_each_extra_by_its_type() -> None:
    """A check that one repeat could not make is unknown for all; counts add up; other values are
    the first repeat's; a peer run's missing counters stay missing."""
    one = measurement(extra={"verified": True, "fallback_jobs": 1, "loop": "uvloop", "error_statuses": {}})
    two = measurement(extra={"verified": None, "fallback_jobs": 2, "loop": "asyncio", "error_statuses": {"0x3": 1}})
    m = merge([one, two])
    assert m.extra == {"verified": None, "fallback_jobs": 3, "loop": "uvloop", "error_statuses": {"0x3": 1}}
    assert m.counters is None and m.label == one.label and (m.mode, m.depth) == (one.mode, one.depth)
    assert merge([two, one]).extra["verified"] is None


def test_cpu_per_job_against_inline() -> None:
    """Device rows count the device process's CPU, the others their own; merge sums it."""
    inline = measurement(label="inline warp.codec", jobs=1000, cpu_ns=20_000_000)
    dev = measurement(jobs=1000, cpu_ns=5_000_000, device_cpu_ns=30_000_000,
                      counters=counters(0, 1000, 0, (NS,), (1000,)))
    assert inline.cpu_us_per_job == pytest.approx(20.0) and dev.cpu_us_per_job == pytest.approx(30.0)
    assert dev.cpu_vs(inline) == pytest.approx(1.5)
    assert merge([dev, dev]).device_cpu_ns == 60_000_000
    assert merge([dev, measurement(counters=dev.counters)]).device_cpu_ns is None  # unknown stays unknown
    d = report.measurement_dict(dev, None, inline)
    assert d["device_cpu_us_per_job"] == pytest.approx(30.0) and d["cpu_vs_inline"] == pytest.approx(1.5)
    assert "cpu_vs_inline" not in report.measurement_dict(inline, None, inline)
    rows = report.table_rows(measurement(label="python-zstandard"), [dev], inline)
    assert [row[0] for row in rows] == ["python-zstandard", "inline warp.codec", "x"]
    assert rows[1][-2] == "-" and rows[2][-2] == "1.50x" and rows[2][-3] == "30.0"
    assert "1.50x the same zstd call inline" in report.cpu_headline(inline, dev)


def test_measurement_dict_fields() -> None:
    peer = measurement()
    dev = measurement(prefault=True, counters=counters(0, 1000, 0, (NS,), (1000,)), extra={"verified": True})
    d = report.measurement_dict(dev, peer)
    for key in ("mb_s", "jobs_s", "ratio", "latency_us", "iopf_per_job", "engine_busy_ratio", "mb_s_per_engine",
                "per_engine_vs_bare", "engine_us_per_job", "prefault", "verified"):
        assert key in d
    assert d["engine_us_per_job"] == pytest.approx(1000.0)
    assert "iopf_per_job" not in report.measurement_dict(peer)


def test_render_table_aligns() -> None:
    text = report.render_table(["run", "MB/s"], [["peer", "1.0"], ["device long label", "123.4"]])
    lines = text.splitlines()
    assert len(lines) == 4 and set(lines[1]) <= {"-", " "}
    assert len({len(line) for line in lines}) == 1  # right-aligned numbers end in the same column
    assert lines[2].startswith("peer ") and lines[3].endswith("123.4")


def test_table_rows_and_headline() -> None:
    peer = measurement(label="python-zstandard")
    dev = measurement(label="device async d=32 prefault", counters=counters(0, 1000, 0, (NS,), (1000,)))
    rows = report.table_rows(peer, [dev])
    assert len(rows) == 2 and all(len(row) == len(report.HEADERS) for row in rows)
    assert rows[0][6:8] == ["-", "-"] and rows[0][-1] == "-"
    assert rows[1][6] == "0.000" and rows[1][7] == "50%" and rows[1][-1] == "1.00x"
    assert "1.00x bare python-zstandard" in report.headline(peer, dev)


def test_progress_formats_and_rate_limits() -> None:
    line = format_progress("device", 1.0, 5.0, 100, 6_553_600)
    assert line.startswith("[device]") and "100 jobs" in line and "6.6 MB/s" in line
    assert rate_limited(2.0, 1.0, 1.0) and not rate_limited(1.5, 1.0, 1.0)


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_display_modes() -> None:
    done = measurement(label="device")
    tty = FakeTty()
    progress = Progress(tty)
    progress.start("device", 5.0)
    progress.last = -10.0  # an update is due
    progress.update(10, 655_360)
    progress.finish(done)
    assert tty.getvalue().startswith("\r[device]") and tty.getvalue().count("\n") == 1  # one line, rewritten
    plain = io.StringIO()
    progress = Progress(plain)
    progress.start("device", 5.0)
    progress.last = -10.0
    progress.update(10, 655_360)
    progress.finish(done)
    assert "\r" not in plain.getvalue() and plain.getvalue().count("\n") == 2
    quiet = Progress(None)
    quiet.start("device", 5.0)
    quiet.update(1, 1)
    quiet.finish(done)  # nothing to write to, nothing raised


def test_blocks_are_consecutive_interleaved_slices(tmp_path: Path) -> None:
    a, b = bytes(range(256)) * 64, bytes(reversed(range(256))) * 64  # 16 KiB each
    (tmp_path / "a.bz2").write_bytes(bz2.compress(a))
    (tmp_path / "b.bz2").write_bytes(bz2.compress(b))
    blocks = corpus.blocks(tmp_path, 4096, 16384, skip=1024)
    # 8 KiB a file (after the 1 KiB skip), cut in 4 KiB slices, files interleaved
    assert blocks == [a[1024:5120], b[1024:5120], a[5120:9216], b[5120:9216]]
    with pytest.raises(FileNotFoundError):
        corpus.blocks(tmp_path / "none", 4096, 16384)


def test_a_short_corpus_file_is_cut_from_its_start(tmp_path: Path) -> None:
    """A file too short for a block past the header skip still gives blocks, from its first byte."""
    data = bytes(range(256)) * 24  # 6 KiB: nothing past a 4 KiB skip makes a 4 KiB block
    (tmp_path / "short.bz2").write_bytes(bz2.compress(data))
    assert corpus.read_slice(tmp_path / "short.bz2", 4096, skip=4096) == data[4096:]
    assert corpus.blocks(tmp_path, 4096, 8192, skip=4096) == [data[:4096]]
    with pytest.raises(ValueError):
        corpus.blocks(tmp_path, 8192, 8192, skip=4096)


def test_options() -> None:
    opts = parse_options(["--sync", "--depth", "8"])
    assert opts.depths == (1,) and opts.mode == "sync" and any("depth forced to 1" in n for n in opts.notes)
    opts = parse_options(["--sweep-depth", "1,2,4", "--compare-prefault", "--engines", "2"])
    assert opts.depths == (1, 2, 4) and opts.prefaults == (True, False) and opts.queues == 2
    assert parse_options(["--block-size", "8k", "--no-prefault"]).block_size == 8192
    assert parse_options([]).prefaults == (True,)
    for bad in (["--sync", "--sweep-depth", "1,2"], ["--block-size", "x"], ["--seconds", "0"], ["--depth", "0"]):
        with pytest.raises(SystemExit):
            parse_options(bad)


def test_device_cpu_of_a_process() -> None:
    """/proc/<pid>/stat user + system time: this process's grows as it burns CPU."""
    before = device.process_cpu_ns(os.getpid())
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:
        pass
    assert device.process_cpu_ns(os.getpid()) - before >= 0.02 * NS


def test_warpzip_bench_dispatch(capsys: pytest.CaptureFixture[str]) -> None:
    from app.__main__ import main as warpzip

    with pytest.raises(SystemExit) as http:
        warpzip(["bench", "http", "--help"])
    assert http.value.code == 0 and "python -m bench" in capsys.readouterr().out
    with pytest.raises(SystemExit) as on_device:
        warpzip(["bench", "device", "--help"])
    assert on_device.value.code == 0 and "--sweep-depth" in capsys.readouterr().out
    assert warpzip(["bench"]) == 2
    usage = capsys.readouterr().err
    assert "device" in usage and "http" in usage


def test_uadk_tool_layout() -> None:
    """§7 item 22 / the fidelity issue's item 12: a run as uadk_tool benchmark prints it — perf in
    KiB/s of input, iops in Kops, CPU_rate in %, then average latency and compress data rate."""
    line = report.uadk_line(measurement(label="device async d=32 prefault"), 64 << 10)
    assert line == ("zstd: device async d=32 prefault: length: 65536 perf: 31250KiB/s iops: 0.500Kops "
                    "CPU_rate: 50.00% avg latency: 2.0us compress data rate: 25.0%")
