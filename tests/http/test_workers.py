"""``--workers 2``: two processes on one port, each with its own PASID and queues on the one
device, neither reachable through a forged SQE; any worker's scrape reports totals over both, and
counters never go backwards."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from bench.proctree import snapshot_tree
from bench.soak import role
from tests.harness import REPO, ServerProc, start_server
from tests.harness.http import call
from tests.harness.metrics import metric
from tests.integration.fidelity import dfx
from tests.integration.test_fidelity_sva import FORGER
from warp import abi
from warp.device.launch import stop_process
from warp.dfx import Queue


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    base = tmp_path_factory.mktemp("workers")
    srv = start_server(base / "root", base / "server.log", "--workers", "2", "--access-log", "0")
    yield srv
    if srv.proc.poll() is None:
        stop_process(srv.proc)


def test_totals_over_both_workers_never_go_backwards(pair: ServerProc) -> None:
    before = metric(pair.url, "warpzip_http_requests_total", 0.0, route="/compress", code="200")
    for i in range(40):
        reply = call(pair.url, "POST", "/compress", b"worker %d " % i * 50)  # a fresh connection each time
        assert reply.status == 200
        assert zstandard.decompress(reply.body) == b"worker %d " % i * 50
    seen = []
    for _ in range(25):  # the worker that answers is current, the other at most a second behind
        seen.append(metric(pair.url, "warpzip_http_requests_total", 0.0, route="/compress", code="200"))
        time.sleep(0.1)
    assert seen == sorted(seen), f"a counter went backwards: {seen}"
    assert seen[-1] == before + 40, seen
    jobs = [metric(pair.url, "warpzip_queue_jobs_submitted_total", driver="zip") for _ in range(6)]
    assert jobs == sorted(jobs) and jobs[-1] >= 40, jobs
    assert metric(pair.url, "warpzip_device_up") == 1


def test_each_worker_has_its_own_pasid_and_queues(pair: ServerProc) -> None:
    device = call(pair.url, "GET", "/device").json()["devices"][0]
    started = [q for q in device["queues"] if q["state"] == "STARTED"]
    assert len(started) == 8  # two compress and two decompress queues per worker (--queues 2)
    assert len({q["pasid"] for q in started}) == 2


def heap_address(pid: int) -> int:
    """Where the SVA heap (the memfd every buffer of the process lives in) starts in ``pid``."""
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        if "memfd:warp-sva-heap" in line:
            return int(line.split("-", 1)[0], 16)
    raise AssertionError(f"no SVA heap mapped in {pid}")


def test_a_forged_sqe_cannot_reach_a_workers_heap(pair: ServerProc) -> None:
    """Another process of the same user (its own PASID) forges SQEs whose source, then destination,
    is a real address in a serving worker's heap: both fail ADDR_FAULT, the workers' queues see no
    error, and the worker goes on answering correctly (the forged SQE from two plain processes is
    tests/integration/test_fidelity_sva.py; this is the same forger against an HTTP worker)."""
    queues = call(pair.url, "GET", "/device").json()["devices"][0]["queues"]
    workers = {q["qid"]: q["pasid"] for q in queues if q["state"] == "STARTED"}
    server = pair.proc.pid
    (victim, _) = sorted(stat.pid for stat in snapshot_tree(server) if role(stat, server) == "worker")
    forger = subprocess.run([sys.executable, "-c", FORGER, str(pair.root), str(heap_address(victim) + 4096)],
                            capture_output=True, text=True, timeout=60, cwd=REPO)
    assert forger.returncode == 0, forger.stderr
    forged = json.loads(forger.stdout)
    assert forged["pasid"] not in workers.values() and not forged["overlaps"], forged
    for side in ("src", "dst"):
        assert forged[side]["status"] == abi.Status.ADDR_FAULT and forged[side]["produced"] == 0, forged
    counters = dfx(pair.root)
    try:
        assert int(counters.queue(forged["sqn"])[Queue.ERR_ADDR_FAULT]) == 2
        assert all(int(counters.queue(qid)[Queue.COMPLETED_ERR]) == 0 for qid in workers)
    finally:
        counters.close()
    for i in range(10):  # fresh connections: both workers, the one whose heap was aimed at included
        reply = call(pair.url, "POST", "/compress", b"intact %d " % i * 100)
        assert zstandard.decompress(reply.body) == b"intact %d " % i * 100


def test_sigterm_stops_workers_and_device_cleanly(pair: ServerProc) -> None:
    pair.proc.send_signal(signal.SIGTERM)
    assert pair.proc.wait(30) == 0
    assert not (pair.root / "dev" / "warp_zip-0").exists()  # the embedded device went with it
