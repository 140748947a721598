"""The data path (app/datapath.py) on the wire: what it serves itself, what it hands to aiohttp,
and that a connection moving between the two keeps its requests in order and its bytes its own."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Iterator

import pytest
import zstandard

from tests.harness import ServerProc, start_server, wait_until
from tests.harness.metrics import metric
from warp.device.launch import stop_process

KEEPALIVE = 3.0
BODY_TIMEOUT = 0.5


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    base = tmp_path_factory.mktemp("datapath")
    server = start_server(base / "root", base / "server.log", "--access-log", "0",
                                  "--keepalive-timeout", str(KEEPALIVE), "--header-timeout", "2",
                                  "--body-timeout", str(BODY_TIMEOUT))
    yield server
    stop_process(server.proc)


def post(path: str, body: bytes, *extra: str) -> bytes:
    fields = "".join(f"{field}\r\n" for field in extra)
    return f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{fields}\r\n".encode() + body


def read_response(sock: socket.socket, pending: bytearray) -> tuple[bytes, dict[str, str], bytes]:
    """One response (head line, fields, body) from ``sock``; bytes past it stay in ``pending``."""
    while b"\r\n\r\n" not in pending:
        chunk = sock.recv(65536)
        assert chunk, "closed before a response head"
        pending += chunk
    head, _, rest = bytes(pending).partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    fields = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    length = int(fields["content-length"])
    body = bytearray(rest)
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed in a response body"
        body += chunk
    pending[:] = body[length:]
    return status.encode(), fields, bytes(body[:length])


def unzstd(frame: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompress(frame)


def connect(srv: ServerProc) -> socket.socket:
    return socket.create_connection(("127.0.0.1", srv.port), timeout=10)


def test_pipelined_requests_of_both_paths_are_answered_in_order(srv: ServerProc) -> None:
    """Two compressions and a GET in one segment: the GET moves the connection to aiohttp, which
    must answer only after the data path answered the requests before it."""
    bodies = [random.Random(i).randbytes(3000) + b"x" * 5000 for i in range(2)]
    frame = zstandard.ZstdCompressor().compress(bodies[0])
    with connect(srv) as sock:
        sock.sendall(post("/compress", bodies[0]) + post("/decompress", frame) + post("/compress", bodies[1])
                     + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        pending = bytearray()
        answers = [read_response(sock, pending) for _ in range(4)]
    assert [status for status, _, _ in answers] == [b"HTTP/1.1 200 OK"] * 4
    assert unzstd(answers[0][2]) == bodies[0]
    assert answers[1][2] == bodies[0]
    assert unzstd(answers[2][2]) == bodies[1]
    assert b'"status": "ok"' in answers[3][2]
    assert answers[0][1]["x-uncompressed-length"] == "8000"


def test_a_body_that_arrives_in_pieces_is_received_whole(srv: ServerProc) -> None:
    body = random.Random(3).randbytes(200_000)
    request = post("/compress?level=1", body)
    with connect(srv) as sock:
        for at in range(0, len(request), 50_000):
            sock.sendall(request[at:at + 50_000])
            time.sleep(0.05)
        status, fields, frame = read_response(sock, bytearray())
    assert status == b"HTTP/1.1 200 OK" and fields["content-type"] == "application/zstd"
    assert unzstd(frame) == body


def test_a_head_in_pieces_is_served_by_aiohttp_and_the_connection_stays_usable(srv: ServerProc) -> None:
    body = b"pieces " * 500
    request = post("/compress", body)
    with connect(srv) as sock:
        sock.sendall(request[:20])
        time.sleep(0.1)
        sock.sendall(request[20:])
        pending = bytearray()
        first = read_response(sock, pending)
        sock.sendall(request)  # the next one, whole: aiohttp owns the connection now
        second = read_response(sock, pending)
    assert unzstd(first[2]) == body and unzstd(second[2]) == body


def test_connection_close_is_honoured(srv: ServerProc) -> None:
    with connect(srv) as sock:
        sock.sendall(post("/compress", b"bye " * 100, "Connection: close"))
        pending = bytearray()
        status, fields, frame = read_response(sock, pending)
        assert status == b"HTTP/1.1 200 OK" and fields["connection"] == "close"
        assert sock.recv(10) == b"" and not pending
    assert unzstd(frame) == b"bye " * 100


def test_an_idle_kept_alive_connection_is_closed_after_the_keepalive_timeout(srv: ServerProc) -> None:
    with connect(srv) as sock:
        sock.sendall(post("/compress", b"idle " * 100))
        read_response(sock, bytearray())
        started = time.monotonic()
        assert sock.recv(10) == b""  # closed by the server, without an answer
        assert KEEPALIVE * 0.9 <= time.monotonic() - started < KEEPALIVE + 5


def test_a_stalled_body_on_a_kept_alive_connection_gets_408_at_the_body_timeout(srv: ServerProc) -> None:
    """The body deadline is earlier than the idle deadline the connection's timer was set for:
    the 408 must come at --body-timeout, not when the keep-alive timer would have fired."""
    with connect(srv) as sock:
        sock.sendall(post("/compress", b"first " * 100))
        read_response(sock, bytearray())
        started = time.monotonic()
        sock.sendall(post("/compress", b"s" * 100_000)[:20_000])
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        elapsed = time.monotonic() - started
    assert data.startswith(b"HTTP/1.1 408") and b"body-timeout" in data
    assert BODY_TIMEOUT * 0.9 <= elapsed < BODY_TIMEOUT + 1.0, elapsed


def test_a_connection_that_sends_nothing_gets_408(srv: ServerProc) -> None:
    with connect(srv) as sock:
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, document = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408") and b"application/problem+json" in head
    assert b"header-timeout" in document


def test_a_refused_parameter_goes_to_aiohttp_and_its_400_keeps_the_connection(srv: ServerProc) -> None:
    with connect(srv) as sock:
        pending = bytearray()
        sock.sendall(post("/compress?level=99", b"x" * 1000))
        status, fields, document = read_response(sock, pending)
        assert status.startswith(b"HTTP/1.1 400") and b"bad-level" in document
        sock.sendall(post("/compress", b"y" * 1000))
        status, _, frame = read_response(sock, pending)
    assert status == b"HTTP/1.1 200 OK" and unzstd(frame) == b"y" * 1000


def test_a_client_that_leaves_mid_body_frees_its_buffer(srv: ServerProc) -> None:
    def gone() -> float:  # 499: the client closed before the answer
        return metric(srv.url, "warpzip_http_requests_total", 0.0, code="499", method="POST", route="/compress")

    before = gone()
    with connect(srv) as sock:
        sock.sendall(post("/compress", b"z" * 100_000)[:30_000])
        time.sleep(0.2)
    wait_until(lambda: metric(srv.url, "warpzip_sva_heap_in_use_bytes") == 0, 10, "the upload's buffer to come back")
    assert gone() == before + 1
