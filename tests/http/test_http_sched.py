"""``warpzip serve --sched session``: each request's session keeps the queue it was given, round
robin, so sequential requests spread over every queue of the worker (the default, least-loaded,
sends an idle worker's requests to its first queue)."""

from __future__ import annotations

from pathlib import Path

import pytest
import zstandard

from tests.harness import start_server
from tests.harness.http import call
from tests.harness.metrics import metric
from warp.device.launch import stop_process


@pytest.mark.parametrize(("sched", "spread"), [("session", True), ("least-loaded", False)])
def test_sessions_spread_requests_over_the_queues(tmp_path: Path, sched: str, spread: bool) -> None:
    server = start_server(tmp_path / "root", tmp_path / "log", "--workers", "1", "--queues", "3", "--sched", sched)
    try:
        body = b"sched " * 2000
        for _ in range(12):
            reply = call(server.url, "POST", "/compress?level=1", body)
            assert reply.status == 200 and zstandard.decompress(reply.body) == body
        fetched = [metric(server.url, "warpzip_device_jobs_fetched_total", 0.0, queue=str(q)) for q in range(6)]
        busy = [n for n in fetched if n]
        assert sum(fetched) == 12
        assert busy == ([4, 4, 4] if spread else [12])
    finally:
        stop_process(server.proc)
