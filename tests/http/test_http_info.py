"""The read-only resources: GET /, /healthz, /device and /metrics, against a real server."""

from __future__ import annotations

import os
import platform
import time

import aiohttp
import pytest
import zstandard

from tests.harness import ServerProc
from tests.harness.http import call, check_problem
from tests.harness.metrics import metric

DEVICE_ATTRS = {"name", "api", "flags", "algorithms", "available_instances", "isolate", "isolate_strategy",
                "region_mmio_size", "region_dus_size", "node_id"}


def metrics_text(url: str) -> str:
    """/metrics as text, checking it is served as text (not as a problem document)."""
    reply = call(url, "GET", "/metrics")
    assert reply.status == 200
    assert reply.content_type == "text/plain"
    return reply.body.decode()


def compress_answers(url: str, code: str) -> float:
    return metric(url, "warpzip_http_requests_total", 0.0, code=code, method="POST", route="/compress")


def test_index_is_text(server: ServerProc) -> None:
    reply = call(server.url, "GET", "/")
    assert reply.status == 200
    assert reply.content_type == "text/plain"
    text = reply.body.decode()
    for route in ("/compress", "/decompress", "/healthz", "/device", "/metrics"):
        assert route in text
    assert f"127.0.0.1:{server.port}" in text  # the example names the host the client used


def test_healthz(server: ServerProc) -> None:
    reply = call(server.url, "GET", "/healthz")
    assert reply.status == 200
    assert reply.content_type == "application/json"
    doc = reply.json()
    assert doc["status"] == "ok"
    assert doc["driver"] == "zip"
    assert doc["device"] == {"name": "warp_zip-0", "alive": True}
    assert doc["fallback_jobs"] == 0


def test_device(server: ServerProc) -> None:
    reply = call(server.url, "GET", "/device")
    assert reply.status == 200
    assert reply.content_type == "application/json"
    doc = reply.json()
    assert len(doc["devices"]) == 1
    device = doc["devices"][0]
    attrs = device["sysfs"]
    assert DEVICE_ATTRS <= attrs.keys(), attrs
    assert attrs["name"] == "warp_zip-0"
    assert attrs["api"] == "hisi_qm_v2"
    assert attrs["algorithms"] == ["zstd", "lz77_zstd"]
    assert attrs["isolate"] == 0
    assert attrs["available_instances"] >= 0
    states = [q["state"] for q in device["queues"]]
    assert "STARTED" in states, device["queues"]
    started = {q["qc_type"] for q in device["queues"] if q["state"] == "STARTED"}
    assert started == {"compress", "decompress"}
    assert device["engines"], device
    # this worker's own queues are the STARTED ones of the device
    mine = doc["worker_queues"]
    assert mine and all(q["alive"] for q in mine)
    assert {q["direction"] for q in mine} == {"compress", "decompress"}
    started_qids = {q["qid"] for q in device["queues"] if q["state"] == "STARTED"}
    assert {q["sqn"] for q in mine} <= started_qids


def test_device_counts_jobs(server: ServerProc) -> None:
    def compress_jobs() -> int:
        queues = call(server.url, "GET", "/device").json()["devices"][0]["queues"]
        return sum(q["completed_ok"] for q in queues if q["qc_type"] == "compress")

    before = compress_jobs()
    for _ in range(3):
        assert call(server.url, "POST", "/compress", b"count me" * 100).status == 200
    assert compress_jobs() == before + 3


def test_metrics_exposition(server: ServerProc) -> None:
    assert call(server.url, "POST", "/compress", b"warm up" * 100).status == 200
    text = metrics_text(server.url)
    for name in ("warpzip_http_requests_total", "warpzip_queue_sq_depth", "warpzip_device_jobs_completed_total",
                 "warpzip_build_info"):
        assert name in text, name
    assert "warpzip_device_iopf_total" in text or "warpzip_iopf_pages_total" in text
    assert metric(server.url, "warpzip_build_info") == 1  # parsed: the exposition is well-formed
    assert metric(server.url, "warpzip_device_jobs_completed_total", status="ok") >= 1


def test_metrics_are_text_not_problem(server: ServerProc) -> None:
    assert not call(server.url, "GET", "/metrics").body.startswith(b"{")


def test_compress_counter_rises_by_n(server: ServerProc) -> None:
    n = 7
    before = compress_answers(server.url, "200")
    for i in range(n):
        assert call(server.url, "POST", f"/compress?level={i}", os.urandom(100 * i)).status == 200
    assert compress_answers(server.url, "200") == before + n


def test_errors_are_counted_by_code(server: ServerProc) -> None:
    before = compress_answers(server.url, "400")
    assert call(server.url, "POST", "/compress?level=99", b"x").status == 400
    assert call(server.url, "POST", "/compress?checksum=9", b"x").status == 400
    assert compress_answers(server.url, "400") == before + 2


@pytest.mark.parametrize("path", ["/", "/healthz", "/device", "/metrics"])
def test_post_to_read_only_resource_is_405(server: ServerProc, path: str) -> None:
    reply = call(server.url, "POST", path, b"x")
    check_problem(reply, 405, server.root)
    assert "GET" in reply.headers["Allow"]


def test_process_metrics_build_labels_and_restart_counters(server: ServerProc) -> None:
    """Issue 16: the standard process_* series (over the workers, merged like the rest), build_info
    that names the Python, aiohttp and libzstd versions, and the parent's restart counters."""
    assert metric(server.url, "process_cpu_seconds_total") > 0
    assert metric(server.url, "process_resident_memory_bytes") > 10 << 20  # a worker with numpy and a heap
    assert metric(server.url, "process_open_fds") > 3
    assert abs(metric(server.url, "process_start_time_seconds") - time.time()) < 3600
    assert metric(server.url, "warpzip_build_info", python=platform.python_version(), aiohttp=aiohttp.__version__,
                  zstd=".".join(map(str, zstandard.ZSTD_VERSION)), device="embedded") == 1
    assert metric(server.url, "warpzip_worker_restarts_total") == 0
    assert metric(server.url, "warpzip_device_restarts_total") == 0
