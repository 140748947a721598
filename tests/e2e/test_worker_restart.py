"""One of two workers SIGKILLed under wrk load: the other keeps serving the port, every answered
request is a correct frame, the parent starts a replacement (its own queues and PASID) that serves
too, and the service still stops cleanly. Workers that cannot start at all stop the service."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import zstandard

from app.supervisor import BOOT_FAILED
from bench.proctree import snapshot_tree
from bench.soak import role
from tests.harness import REPO, require_tool, start_server, wait_until
from tests.harness.metrics import metric
from tests.harness.wrk import finish, start_wrk
from warp.device.launch import stop_process

pytestmark = pytest.mark.e2e

CONNECTIONS = 16
WAIT = 20.0  # seconds: a replacement worker starts after a backoff second, then maps its heap


def workers(server_pid: int) -> set[int]:
    return {stat.pid for stat in snapshot_tree(server_pid) if role(stat, server_pid) == "worker"}


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:  # a fresh connection each time
        return json.loads(response.read())


def started_queues(url: str) -> dict[int, int]:
    """sqn -> PASID of every STARTED queue on the device."""
    device = get_json(url + "/device")["devices"][0]
    return {q["qid"]: q["pasid"] for q in device["queues"] if q["state"] == "STARTED"}


def compress(url: str, data: bytes) -> bytes:
    request = urllib.request.Request(url + "/compress", data=data, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return bytes(zstandard.decompress(response.read()))


def test_a_killed_worker_is_replaced_while_the_other_serves(corpus: dict[str, Path],
                                                            tmp_path: Path) -> None:
    wrk = require_tool("wrk")
    body = tmp_path / "body.bin"
    with corpus["xml"].open("rb") as f:
        body.write_bytes(f.read(16 << 10))
    srv = start_server(tmp_path / "root", tmp_path / "server.log", "--workers", "2", "--access-log", "0")
    try:
        wait_until(lambda: len(started_queues(srv.url)) == 8, WAIT, "both workers' queues")
        assert metric(srv.url, "warpzip_worker_restarts_total") == 0
        load = start_wrk(wrk, f"{srv.url}/compress?level=3", body, seconds=8, connections=CONNECTIONS)
        time.sleep(2)
        first = workers(srv.proc.pid)
        assert len(first) == 2, first
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        # reaped by the parent, so its listening socket is surely closed (a connection queued on it
        # before that would be reset, as one in flight on a dying process is)
        wait_until(lambda: f"worker {victim} was killed by SIGKILL" in srv.log.read_text(), WAIT,
                   "the parent to notice")

        data = b"served by the survivor " * 500
        for _ in range(10):  # the replacement waits a backoff second: these reach the survivor alone
            assert compress(srv.url, data) == data
        wait_until(lambda: len(started_queues(srv.url)) == 4, WAIT, "the killed worker's queues to be released")
        survivor_queues = started_queues(srv.url)

        wait_until(lambda: len(workers(srv.proc.pid)) == 2 and len(started_queues(srv.url)) == 8, WAIT, "a replacement")
        replacement_queues = {sqn: pasid for sqn, pasid in started_queues(srv.url).items()
                              if sqn not in survivor_queues}
        assert len(set(replacement_queues.values())) == 1  # one PASID for the new address space...
        assert not set(replacement_queues.values()) & set(survivor_queues.values())  # ...not the survivor's
        for _ in range(100):  # fresh connections: both workers accept from the shared socket
            answered = {q["sqn"] for q in get_json(srv.url + "/device")["worker_queues"]}
            if answered <= replacement_queues.keys():
                break
        else:
            pytest.fail("no request reached the replacement worker")
        result = finish(load, 60)
        assert metric(srv.url, "warpzip_worker_restarts_total") == 1
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(30) == 0
    finally:
        stop_process(srv.proc)
    print(result.output)
    assert "starting a replacement" in srv.log.read_text()
    assert result.bad == 0 and result.non2xx == 0 and result.timeout == 0, result.output
    assert result.requests > 0
    # Only connections broke, never a response: those open on the killed worker, and those wrk opened
    # again while the dying process still had its listener (its 1 GiB heap is unmapped first).
    assert result.read + result.write + result.connect <= 4 * CONNECTIONS, result.output


@pytest.mark.parametrize("count", [1, 2])
def test_workers_that_cannot_start_stop_the_service(tmp_path: Path, count: int) -> None:
    """The port is taken (by a plain listening socket): nothing can serve, so the service
    exits with BOOT_FAILED and says why, instead of forking replacements that would fail alike."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        log = tmp_path / "server.log"
        with log.open("wb") as sink:
            proc = subprocess.Popen([sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port", str(port),
                                     "--root", str(tmp_path / "root"), "--device", "none", "--workers", str(count)],
                                    stdout=sink, stderr=subprocess.STDOUT, cwd=REPO)
        try:
            assert proc.wait(30) == BOOT_FAILED
        finally:
            stop_process(proc)
    text = log.read_text()
    assert f"cannot serve on 127.0.0.1:{port}" in text and "already in use" in text, text
    assert "starting a replacement" not in text


def test_a_second_server_on_a_port_in_use_exits_and_the_first_keeps_it(tmp_path: Path) -> None:
    """Issue 15, item 3: with SO_REUSEPORT a second ``warpzip serve --port P`` started and took half
    of the first one's connections; now the port is bound once, and the second exits at once."""
    first = start_server(tmp_path / "first", tmp_path / "first.log", "--device", "none")
    try:
        log = tmp_path / "second.log"
        with log.open("wb") as sink:
            second = subprocess.Popen([sys.executable, "-m", "app", "serve", "--host", "127.0.0.1",
                                       "--port", str(first.port), "--root", str(tmp_path / "second"),
                                       "--device", "none", "--workers", "2"],
                                      stdout=sink, stderr=subprocess.STDOUT, cwd=REPO)
        try:
            assert second.wait(30) == BOOT_FAILED
        finally:
            stop_process(second)
        assert "already in use" in log.read_text(), log.read_text()
        for _ in range(20):  # every connection reaches the first server
            assert get_json(first.url + "/healthz")["status"] == "ok"
    finally:
        stop_process(first.proc)
