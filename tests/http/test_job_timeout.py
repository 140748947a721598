"""``--job-timeout``: a hung engine costs a request one timeout, after which the worker resets its
queues and the request is answered from the cpu; a job that outlives the timeout on the cpu too
gets a 503 that says to retry. Either way the buffers come back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import zstandard

from tests.harness import ServerProc, device_cli, process_stopped, start_server, wait_until
from tests.harness.http import call, check_problem
from tests.harness.metrics import metric
from warp.device.launch import stop_process
from warp.drv.zip import RESET_GRACE

MIB = 1 << 20


def healthz(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/healthz", timeout=10) as response:
        doc: dict[str, Any] = json.loads(response.read())
    return doc


def server_with_job_timeout(tmp_path_factory: pytest.TempPathFactory, name: str,
                            seconds: str) -> Iterator[ServerProc]:
    base = tmp_path_factory.mktemp(name)
    srv = start_server(base / "root", base / "server.log", "--access-log", "0", "--job-timeout", seconds)
    yield srv
    stop_process(srv.proc)


@pytest.fixture(scope="module")
def hasty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    yield from server_with_job_timeout(tmp_path_factory, "hasty", "0.5")


def test_hung_engine_is_reset_and_the_request_still_succeeds(hasty: ServerProc) -> None:
    body = os.urandom(2000) * 8
    assert call(hasty.url, "POST", "/compress", body).status == 200  # queues open, device healthy
    assert device_cli(hasty.root, "inject", "hang").returncode == 0  # until reset
    try:
        started = time.monotonic()
        reply = call(hasty.url, "POST", "/compress?level=5", body)
        assert reply.status == 200, reply.body[:300]
        assert zstandard.decompress(reply.body) == body
        assert time.monotonic() - started < 5  # one timeout, not a wait for the hang
        assert metric(hasty.url, "warpzip_queue_resets_total") == 1
        assert healthz(hasty.url)["queue_resets"] == 1
        # the device answers the PUT_Qs once the hang failed their drain and the reset ran: only
        # then do the destinations it might have written go back to the pool
        wait_until(lambda: metric(hasty.url, "warpzip_sva_heap_in_use_bytes") == 0, 10,
                   "the answered PUT_Qs to let the destinations go")
    finally:
        assert device_cli(hasty.root, "reset").returncode == 0
    # the worker finds the device again by itself
    wait_until(lambda: healthz(hasty.url)["driver"] == "zip", 10, "the worker to move back onto the device")
    assert zstandard.decompress(call(hasty.url, "POST", "/compress", body).body) == body


@pytest.fixture(scope="module")
def cpu_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    base = tmp_path_factory.mktemp("cpu-only")
    srv = start_server(base / "root", base / "server.log", "--access-log", "0", "--device", "none",
                               "--job-timeout", "0.001")
    yield srv
    stop_process(srv.proc)


def test_job_over_the_timeout_on_the_cpu_is_503_with_retry_after(cpu_only: ServerProc) -> None:
    body = os.urandom(1 << 16) * 16  # 1 MiB at level 19 takes far longer than a millisecond
    reply = call(cpu_only.url, "POST", "/compress?level=19", body)
    doc = check_problem(reply, 503, cpu_only.root)
    assert doc["type"].endswith("timeout"), doc
    assert reply.headers["Retry-After"] == "1"
    wait_until(lambda: metric(cpu_only.url, "warpzip_sva_heap_in_use_bytes") == 0, 10,  # once the thread ends
               "the timed-out job's buffers to come back")


@pytest.fixture(scope="module")
def stoppable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    yield from server_with_job_timeout(tmp_path_factory, "stoppable", "1")


def test_a_stopped_device_costs_a_request_one_timeout_and_healthz_nothing(stoppable: ServerProc) -> None:
    """``kill -STOP`` on the device (issue 15, item 5): a request waits one --job-timeout (plus
    the reset's grace) and is answered from the cpu; /healthz and later requests never wait on the
    device; after SIGCONT the worker moves back onto it and no buffer stays held."""
    body = os.urandom(2000) * 8
    assert call(stoppable.url, "POST", "/compress", body).status == 200
    out = subprocess.run(["pgrep", "-f", f"warp.device --root {stoppable.root} "], capture_output=True, text=True)
    (pid,) = map(int, out.stdout.split())
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_until(lambda: process_stopped(pid), 10, "the device to stop")
        started = time.monotonic()
        reply = call(stoppable.url, "POST", "/compress", body)
        assert reply.status == 200 and zstandard.decompress(reply.body) == body
        assert time.monotonic() - started < 1 + RESET_GRACE + 1.5
        for _ in range(8):  # probes come due meanwhile, and go to the background
            started = time.monotonic()
            assert healthz(stoppable.url)["driver"] == "cpu"
            reply = call(stoppable.url, "POST", "/compress", body)
            assert reply.status == 200 and time.monotonic() - started < 1.0
            time.sleep(0.25)
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_until(lambda: healthz(stoppable.url)["driver"] == "zip"
               and metric(stoppable.url, "warpzip_sva_heap_in_use_bytes") == 0, 20,
               "the worker to come back onto the device with its heap free")
    assert zstandard.decompress(call(stoppable.url, "POST", "/compress", body).body) == body
