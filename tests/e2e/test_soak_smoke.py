"""The memory-soak harness (``make soak``, ``bench/soak.py``) for 15 s instead of ten minutes: it
drives the load, samples the server, both workers and the device throughout, and has enough samples
after the warm-up to measure growth. The growth itself is not judged here: 15 s is mostly warm-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.soak import ROLES, Settings, render, run
from tests.harness import require_tool

pytestmark = pytest.mark.e2e


def test_soak_harness_samples_every_process_under_load(tmp_path: Path) -> None:
    require_tool("wrk")
    soak = run(Settings(duration_s=15, warmup_s=5, interval_s=1.0), tmp_path)
    print(render(soak))
    assert not soak.failures, soak.failures
    assert soak.result is not None and soak.result.requests > 0, soak.result
    assert soak.result.non2xx == 0 and soak.result.errors == 0, soak.result
    assert len(soak.samples) >= 10
    for s in soak.samples:
        kinds = sorted(kind for kind, _ in s.processes.values())
        assert kinds == sorted(["server", "worker", "worker", "device"]), s
        assert all(s.rss(kind) > 0 for kind in ROLES)
    assert soak.growth() is not None
    assert "wrk:" in render(soak)
