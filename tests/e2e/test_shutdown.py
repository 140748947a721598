"""SIGTERM during a wrk run: the service stops accepting, finishes every request it accepted —
each gets its full response — stops its device and exits 0."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path
from types import ModuleType

import pytest
from wrkscript import WrkResult, finish, run_wrk

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_under_load_loses_no_accepted_request(harness: ModuleType, corpus: dict[str, Path],
                                                      tmp_path: Path, workers: int) -> None:
    wrk = harness.require_tool("wrk")
    body = tmp_path / "body.bin"
    with corpus["dickens"].open("rb") as f:
        body.write_bytes(f.read(64 << 10))  # 64 KiB at level 9: requests are in flight at the signal
    log = tmp_path / "server.log"
    srv = harness.start_server(tmp_path / "root", log, "--workers", str(workers), "--shutdown-timeout", "20",
                               "--access-log", "1")
    try:
        load = run_wrk(wrk, f"{srv.url}/compress?level=9", body, tmp_path, seconds=8, background=True)
        assert not isinstance(load, WrkResult)
        time.sleep(3)
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(30) == 0
        result = finish(load, 60)
    finally:
        harness.stop_process(srv.proc)
    served = len(re.findall(r'"POST /compress\?level=9 HTTP/1.1" 200 ', log.read_text()))
    # Every request the service answered reached wrk whole and correct; the ones it never accepted
    # show up as wrk's connect/read errors, never as a bad or partial response.
    assert result.badframes == 0 and result.non2xx == 0, result.output
    assert served > 0 and result.requests == served, (served, result.output)
    assert not (srv.root / "dev" / "warp_zip-0").exists()
