"""What a client gets from the shipped HAProxy when no instance can answer: a 503 with Retry-After
and a problem+json body in the service's own shape — whether HAProxy has no healthy instance at
all, or every attempt (the request plus its retries) hit an instance that dropped the connection
(HAProxy's 502, which deploy/haproxy/haproxy.cfg answers as that same 503).

The dropping instance is a few lines of socket code in this process, not a warpzip: it passes the
/healthz check and closes the connection on anything else, which no real instance does on purpose.
"""

from __future__ import annotations

import json
import socketserver
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import free_port, require_tool
from tests.harness.haproxy import start_haproxy
from warp.device.launch import stop_process

pytestmark = pytest.mark.e2e


class DropsRequests(socketserver.StreamRequestHandler):
    """200 to HAProxy's GET /healthz; any other request: the connection closes unanswered."""

    def handle(self) -> None:
        request_line = self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass  # the whole head is read: closing with unread bytes would reset the check's connection
        if request_line.startswith(b"GET /healthz "):
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")


@pytest.fixture
def dropping_instance() -> Iterator[str]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), DropsRequests)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.mark.parametrize("instance", ["nothing listening", "drops every request"])
def test_no_answer_from_any_instance_is_a_503_with_retry_after(
        tmp_path: Path, request: pytest.FixtureRequest, instance: str) -> None:
    haproxy = require_tool("haproxy")
    address = (f"127.0.0.1:{free_port()}" if instance == "nothing listening"
               else request.getfixturevalue("dropping_instance"))
    lb = start_haproxy(haproxy, tmp_path, [address])
    try:
        expected = "DOWN" if instance == "nothing listening" else "UP"
        assert lb.servers()["warpzip1"]["status"] == expected
        post = urllib.request.Request(f"{lb.url}/compress", data=b"x" * 4096, method="POST")
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(post, timeout=10)
        error = caught.value
        problem = json.loads(error.read())
        stats = lb.servers()["warpzip1"]
    finally:
        stop_process(lb.proc)
    print(instance, "retries", stats["wretr"], "redispatches", stats["wredis"], lb.log.read_text()[-600:])
    assert error.code == 503 and error.headers["Retry-After"] == "1"
    assert error.headers["Content-Type"] == "application/problem+json"
    assert problem["status"] == 503 and problem["type"].endswith("/no-instance"), problem
    if instance == "drops every request":
        assert int(stats["wretr"]) + int(stats["wredis"]) >= 1, stats  # it was retried before giving up
