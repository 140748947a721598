"""A 10-second ``wrk`` run against POST /compress: load without errors, the service healthy after it,
and the Prometheus request counter agreeing with what wrk saw."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
import zstandard

from tests.harness import ServerProc, require_tool
from tests.harness.metrics import metric
from tests.harness.wrk import run_wrk

pytestmark = pytest.mark.e2e

SLICE = 4096
DURATION = 10


def compress_200s(url: str) -> float:
    return metric(url, "warpzip_http_requests_total", 0.0, code="200", method="POST", route="/compress")


def test_wrk_compress_smoke(server: ServerProc, corpus: dict[str, Path], tmp_path: Path) -> None:
    wrk = require_tool("wrk")
    body = tmp_path / "body.bin"
    with corpus["dickens"].open("rb") as f:
        f.seek(1 << 20)
        body.write_bytes(f.read(SLICE))
    assert body.stat().st_size == SLICE
    before = compress_200s(server.url)
    result = run_wrk(wrk, f"{server.url}/compress?level=3", body, DURATION)
    out = result.output
    print(out)
    non2xx, requests, connect, read, write, timeouts, bad = (
        result.non2xx, result.requests, result.connect, result.read, result.write, result.timeout, result.bad)
    assert requests > 0, out
    assert non2xx == 0, out
    assert (connect, read, write, timeouts) == (0, 0, 0, 0), out
    assert "Socket errors" not in out, out
    assert "Non-2xx" not in out, out
    assert bad == 0 and result.ok == requests, out

    with urllib.request.urlopen(server.url + "/healthz", timeout=10) as response:
        assert response.status == 200
        health = json.loads(response.read())
    assert health["status"] == "ok" and health["driver"] == "zip" and health["device"]["alive"]
    assert health["fallback_jobs"] == 0

    after = compress_200s(server.url)
    assert after - before >= requests, (before, after, requests)
    # the run did not wedge the service: one more request still round-trips
    request = urllib.request.Request(server.url + "/compress", data=body.read_bytes(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert zstandard.ZstdDecompressor().decompress(response.read()) == body.read_bytes()
