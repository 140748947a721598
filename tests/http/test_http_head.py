"""The request head and the connection (``app.connection``): parser limits answered as problem
documents (414, 431, 400), the head deadline ``--header-timeout`` against slowloris (408, then
close) that leaves kept-alive connections idle between requests alone, and ``--max-connections``.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from app.connection import FIELD_LIMIT, MAX_HEADERS, REQUEST_LINE_LIMIT
from tests.harness import ServerProc, start_server, wait_until
from tests.harness.http import call, check_problem
from tests.harness.metrics import metric
from warp.device.launch import stop_process

HEADER_TIMEOUT = 1.0
MAX_CONNECTIONS = 4


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    base = tmp_path_factory.mktemp("strict")
    srv = start_server(base / "root", base / "server.log", "--header-timeout", str(HEADER_TIMEOUT),
                               "--max-connections", str(MAX_CONNECTIONS))
    yield srv
    stop_process(srv.proc)


def read_answer(sock: socket.socket, timeout: float = 10.0) -> tuple[bytes, bool]:
    """Everything the server sends on ``sock`` until it closes; (bytes, whether it closed).

    A reset counts as closed: a byte the client sent after the server's close (the slowloris loop
    below sends one every 0.2 s) is answered by the kernel with RST, after the answer already read."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        return data, False
    except ConnectionResetError:
        return data, True
    return data, True


def check_raw_problem(data: bytes, status: int, slug: str) -> dict[str, Any]:
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.split(b" ", 2)[1] == str(status).encode(), data[:300]
    assert b"content-type: application/problem+json" in head.lower(), head
    doc: dict[str, Any] = json.loads(body)
    assert doc["status"] == status and doc["type"].endswith("/" + slug), doc
    return doc


# --- parser limits as problem documents -------------------------------------------------------------


def test_request_line_over_the_limit_is_414(strict: ServerProc) -> None:
    doc = check_problem(call(strict.url, "GET", "/healthz?pad=" + "a" * REQUEST_LINE_LIMIT), 414, strict.root)
    assert doc["type"].endswith("/uri-too-long") and str(REQUEST_LINE_LIMIT) in doc["detail"]


def test_header_field_over_the_limit_is_431(strict: ServerProc) -> None:
    reply = call(strict.url, "GET", "/healthz", headers={"X-Big": "b" * (FIELD_LIMIT + 1)})
    doc = check_problem(reply, 431, strict.root)
    assert doc["type"].endswith("/header-too-large") and str(FIELD_LIMIT) in doc["detail"]


def test_too_many_header_fields_is_431(strict: ServerProc) -> None:
    headers = {f"X-Field-{i}": "1" for i in range(MAX_HEADERS + 1)}
    doc = check_problem(call(strict.url, "GET", "/healthz", headers=headers), 431, strict.root)
    assert doc["type"].endswith("/too-many-headers")


def test_malformed_head_is_a_400_problem(strict: ServerProc) -> None:
    with socket.create_connection(("127.0.0.1", strict.port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n")
        data, closed = read_answer(sock)
    assert closed
    check_raw_problem(data, 400, "bad-request")


def test_a_head_just_within_the_limits_is_served(strict: ServerProc) -> None:
    padding = "a" * (REQUEST_LINE_LIMIT - len("/healthz?pad=") - 100)
    headers = {f"X-Field-{i}": "1" for i in range(MAX_HEADERS - 10)} | {"X-Big": "b" * (FIELD_LIMIT - 100)}
    assert call(strict.url, "GET", "/healthz?pad=" + padding, headers=headers).status == 200


# --- the head deadline -------------------------------------------------------------------------------


def test_slow_head_gets_408_and_is_closed_while_others_are_served(strict: ServerProc) -> None:
    """Slowloris on the headers: a byte every 0.2 s keeps the connection busy but never completes the
    head; at --header-timeout it gets 408 problem+json and is closed. A client on a kept-alive
    connection, idle for longer than the timeout between its requests, is served throughout."""
    kept = http.client.HTTPConnection("127.0.0.1", strict.port, timeout=10)
    slow = socket.create_connection(("127.0.0.1", strict.port), timeout=10)
    try:
        kept.request("POST", "/compress", b"kept alive " * 100)
        assert kept.getresponse().read()
        started = time.monotonic()
        slow.sendall(b"POST /compress HTTP/1.1\r\nHost: x\r\n")
        answer = b""
        for byte in b"X-Slow: " + b"s" * 40:
            if answer := answer_now(slow):  # looked at before each byte: no byte after a seen close
                break
            slow.sendall(bytes([byte]))
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        rest, closed = read_answer(slow)
        assert closed, "the slow connection stayed open after its 408"
        check_raw_problem(answer + rest, 408, "header-timeout")
        assert elapsed >= HEADER_TIMEOUT * 0.9, elapsed  # not before the deadline
        assert call(strict.url, "POST", "/compress", b"meanwhile").status == 200
        kept.request("POST", "/compress", b"still alive " * 100)  # idle since before the slow head
        response = kept.getresponse()
        assert response.status == 200 and response.read()
    finally:
        slow.close()
        kept.close()


def answer_now(sock: socket.socket) -> bytes:
    """What the server already sent on ``sock`` (b"" if nothing yet); raises if it closed silently."""
    sock.setblocking(False)
    try:
        data = sock.recv(65536)
    except BlockingIOError:
        return b""
    finally:
        sock.setblocking(True)
    assert data, "closed without an answer"
    return data


def test_a_later_head_on_a_kept_alive_connection_has_a_deadline_too(strict: ServerProc) -> None:
    with socket.create_connection(("127.0.0.1", strict.port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200"), first[:200]
        time.sleep(HEADER_TIMEOUT * 1.5)  # idle between requests: not a slow head
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # ...but this head never ends
        data, closed = read_answer(sock)
    assert closed
    check_raw_problem(data, 408, "header-timeout")


# --- the connection limit ----------------------------------------------------------------------------


def test_connections_over_the_limit_get_503_until_one_closes(strict: ServerProc) -> None:
    held = [http.client.HTTPConnection("127.0.0.1", strict.port, timeout=10) for _ in range(MAX_CONNECTIONS)]
    try:
        for conn in held:  # a request each, so every one is open on the server before the next test
            conn.request("GET", "/healthz")
            assert conn.getresponse().read()
        doc = check_problem(reply := call(strict.url, "GET", "/healthz"), 503, strict.root)
        assert doc["type"].endswith("/overloaded") and reply.headers["Retry-After"] == "1"
    finally:
        held.pop().close()
    try:
        # the server sees the close a moment later
        wait_until(lambda: call(strict.url, "GET", "/healthz").status == 200, 10, "a connection slot to free up")
    finally:
        for conn in held:
            conn.close()


# --- counted like every other answer ---------------------------------------------------------------


def refused(url: str, code: str) -> float:
    """``warpzip_http_requests_total`` for what the connection answered itself with ``code`` (it
    never reached a route, so route and method are "-")."""
    return metric(url, "warpzip_http_requests_total", 0.0, route="-", method="-", code=code)


def test_answers_of_the_connection_are_counted(strict: ServerProc) -> None:
    before = refused(strict.url, "431")
    reply = call(strict.url, "GET", "/healthz", headers={"X-Big": "b" * (FIELD_LIMIT + 1)})
    check_problem(reply, 431, strict.root)
    wait_until(lambda: refused(strict.url, "431") == before + 1, 10, "the 431 to be counted, once")
