"""SIGTERM during a wrk run: the service stops accepting, finishes every request it accepted —
each gets its full response — stops its device and exits 0."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pytest

from tests.harness import require_tool, start_server
from tests.harness.wrk import finish, start_wrk
from warp.device.launch import stop_process

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_under_load_loses_no_accepted_request(corpus: dict[str, Path],
                                                      tmp_path: Path, workers: int) -> None:
    wrk = require_tool("wrk")
    body = tmp_path / "body.bin"
    with corpus["dickens"].open("rb") as f:
        body.write_bytes(f.read(64 << 10))  # 64 KiB at level 9: requests are in flight at the signal
    log = tmp_path / "server.log"
    srv = start_server(tmp_path / "root", log, "--workers", str(workers), "--shutdown-timeout", "20",
                               "--access-log", "1")
    try:
        load = start_wrk(wrk, f"{srv.url}/compress?level=9", body, seconds=8)
        time.sleep(3)
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(30) == 0
        result = finish(load, 60)
    finally:
        stop_process(srv.proc)
    served = len(re.findall(r'"POST /compress\?level=9 HTTP/1.1" 200 ', log.read_text()))
    # Every request the service answered reached wrk whole and correct; the ones it never accepted
    # show up as wrk's connect/read errors, never as a bad or partial response.
    assert result.bad == 0 and result.non2xx == 0, result.output
    assert served > 0 and result.requests == served, (served, result.output)
    assert not (srv.root / "dev" / "warp_zip-0").exists()
