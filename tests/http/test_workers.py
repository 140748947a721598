"""``--workers 2``: two processes on one port, each with its own PASID and queues on the one
device; any worker's scrape reports totals over both, and counters never go backwards."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
import zstandard
from prometheus_client.parser import text_string_to_metric_families


@pytest.fixture(scope="module")
def pair(harness: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    base = tmp_path_factory.mktemp("workers")
    srv = harness.start_server(base / "root", base / "server.log", "--workers", "2", "--access-log", "0")
    yield srv
    if srv.proc.poll() is None:
        harness.stop_process(srv.proc)


def sample(url: str, call: Any, name: str, **labels: str) -> float:
    text = call(url, "GET", "/metrics").body.decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def test_totals_over_both_workers_never_go_backwards(pair: Any, call: Any) -> None:
    before = sample(pair.url, call, "warpzip_http_requests_total", route="/compress", code="200")
    for i in range(40):
        reply = call(pair.url, "POST", "/compress", b"worker %d " % i * 50)  # a fresh connection each time
        assert reply.status == 200
        assert zstandard.decompress(reply.body) == b"worker %d " % i * 50
    seen = []
    for _ in range(25):  # the worker that answers is current, the other at most a second behind
        seen.append(sample(pair.url, call, "warpzip_http_requests_total", route="/compress", code="200"))
        time.sleep(0.1)
    assert seen == sorted(seen), f"a counter went backwards: {seen}"
    assert seen[-1] == before + 40, seen
    jobs = [sample(pair.url, call, "warpzip_queue_jobs_submitted_total", driver="zip") for _ in range(6)]
    assert jobs == sorted(jobs) and jobs[-1] >= 40, jobs
    assert sample(pair.url, call, "warpzip_device_up") == 1


def test_each_worker_has_its_own_pasid_and_queues(pair: Any, call: Any) -> None:
    device = call(pair.url, "GET", "/device").json()["devices"][0]
    started = [q for q in device["queues"] if q["state"] == "STARTED"]
    assert len(started) == 8  # two compress and two decompress queues per worker (--queues 2)
    assert len({q["pasid"] for q in started}) == 2


def test_sigterm_stops_workers_and_device_cleanly(pair: Any, harness: ModuleType) -> None:
    pair.proc.send_signal(signal.SIGTERM)
    assert pair.proc.wait(30) == 0
    assert not (pair.root / "dev" / "warp_zip-0").exists()  # the embedded device went with it
