"""Worker figures across processes (app/tally.py, app/snapshot_files.py): each worker publishes
its tally to its own file; a scrape of any worker merges them — counters and histograms over every
file, so a dead worker's counts stay and totals never go backwards; gauges over live workers only,
summed or (for ``combine="min"``) the lowest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.snapshot_files import SHARED_DIR_ENV, SnapshotFiles, use_shared_directory
from app.tally import LATENCY_BUCKETS, Tally, merge


def dead_pid() -> int:
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                           text=True, check=True)
    return int(child.stdout)


def test_counters_sum_over_every_worker_and_gauges_over_live_ones() -> None:
    live, dead = Tally(), Tally()
    for tally in (live, dead):
        tally.add("warpzip_fallback_jobs", (), 2)
        tally.set("warpzip_admission_pending", (), 5)
        tally.set("warpzip_device_up", (), 1)
        tally.observe("warpzip_queue_job_duration_seconds", ("zip",), 0.002)
    live.set("warpzip_device_up", (), 0)  # one worker lost the device: the service is not all up
    merged = merge([live.snapshot(1), dead.snapshot(2), live.snapshot(3)], live={1, 3})
    assert merged.values["warpzip_fallback_jobs"][()] == 6  # the dead worker's counts stay
    assert merged.values["warpzip_admission_pending"][()] == 10  # its gauges do not
    assert merged.values["warpzip_device_up"][()] == 0  # combine="min"
    counts = merged.histograms["warpzip_queue_job_duration_seconds"][("zip",)]
    assert len(counts) == len(LATENCY_BUCKETS) + 2 and sum(counts[:-1]) == 3
    assert counts[-1] == pytest.approx(0.006)


def test_series_the_worker_does_not_know_are_left_out() -> None:
    snapshot = {"pid": 1, "values": {"warpzip_gone": [[[], 1.0]]}, "histograms": {"warpzip_gone_seconds": []}}
    merged = merge([snapshot], live={1})
    assert merged.values == {} and merged.histograms == {}


def test_a_scrape_merges_every_published_file_and_skips_broken_ones(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SHARED_DIR_ENV, "")  # restored after the test, whatever use_shared_directory sets
    (tmp_path / "worker-1.json").write_text("stale")
    use_shared_directory(tmp_path)  # the stale file of an earlier serve goes
    assert os.environ[SHARED_DIR_ENV] == str(tmp_path)
    mine = Tally()
    mine.add("warpzip_queue_resets", (), 1)
    files = SnapshotFiles()
    files.publish(mine)
    other = Tally()
    other.add("warpzip_queue_resets", (), 2)
    other.set("warpzip_admission_pending", (), 7)
    gone = dead_pid()
    (tmp_path / f"worker-{gone}.json").write_text(json.dumps(other.snapshot(gone)))
    (tmp_path / "worker-9.json").write_text("{half a fil")  # being replaced right now
    merged = files.merged(mine)
    assert merged.values["warpzip_queue_resets"][()] == 3
    assert () not in merged.values.get("warpzip_admission_pending", {})


def test_without_a_shared_directory_a_worker_reports_its_own_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SHARED_DIR_ENV, "")
    mine = Tally()
    mine.add("warpzip_queue_resets", (), 4)
    files = SnapshotFiles()
    files.publish(mine)  # nowhere to publish: nothing happens
    assert files.merged(mine).values["warpzip_queue_resets"][()] == 4
