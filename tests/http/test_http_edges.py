"""HTTP edges a user meets with curl (issue 16): HEAD on every GET route, ``Expect: 100-continue``
refused before the body when the request will be refused anyway, every error as problem+json
(``OPTIONS *``, ``CONNECT``, an unknown ``Expect``), unknown or malformed query parameters, an empty
/decompress body, and problem types that lead to their documentation."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from app.api.problems import KINDS
from tests.harness import ServerProc, require_tool, start_server
from tests.harness.http import call, check_problem
from warp.device.launch import stop_process

MIB = 1 << 20


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    """A 1 MiB --max-body, so a 3 MiB upload is over it."""
    base = tmp_path_factory.mktemp("edges")
    srv = start_server(base / "root", base / "server.log", "--max-body", str(MIB), "--heap-size", str(8 * MIB),
                       "--max-stream", str(MIB))  # bodies over --max-body stream: bound those too
    yield srv
    stop_process(srv.proc)


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_tool("curl"), "-sS", *args], capture_output=True, text=True, timeout=60)


def raw(port: int, head: bytes) -> bytes:
    """Send a raw request head and read the answer until the server closes or 2 s pass."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head)
        sock.settimeout(2)
        out = b""
        try:
            while chunk := sock.recv(65536):
                out += chunk
        except TimeoutError:
            pass
    return out


@pytest.mark.parametrize("path", ["/", "/healthz", "/metrics", "/device", "/problems", "/problems/overloaded"])
def test_head_is_served_on_every_get_route(small: ServerProc, path: str) -> None:
    got = curl("-I", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", small.url + path)
    assert got.stdout == "200 0", (got.stdout, got.stderr)
    assert call(small.url, "HEAD", path).body == b""


def test_curl_gets_413_before_it_sends_a_body_over_the_limit(small: ServerProc, tmp_path: Path) -> None:
    """curl sends ``Expect: 100-continue`` for a large body and waits for the answer: a 413 now
    means it never uploads the 3 MiB (it used to get 100 Continue, send 1–3 MB, then the 413)."""
    body = tmp_path / "big.bin"
    body.write_bytes(os.urandom(3 * MIB))
    got = curl("-v", "-H", "Expect: 100-continue", "--data-binary", f"@{body}", "-w", "\n%{http_code} %{size_upload}",
               small.url + "/compress")
    code, uploaded = got.stdout.rsplit("\n", 1)[-1].split()
    assert code == "413", got.stdout[-500:]
    assert int(uploaded) < MIB, f"curl uploaded {uploaded} bytes before the 413"
    assert "100 Continue" not in got.stderr
    assert "application/problem+json" in got.stderr


@pytest.mark.parametrize(("extra", "query", "status", "slug"), [
    ("Content-Encoding: gzip\r\n", "", 415, "unsupported-encoding"),
    ("", "?level=99", 400, "bad-level"),
    ("", "?lvl=5", 400, "bad-parameter"),
])
def test_expect_100_continue_is_refused_before_the_body(small: ServerProc, extra: str, query: str, status: int,
                                                        slug: str) -> None:
    answer = raw(small.port, f"POST /compress{query} HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n{extra}"
                             f"Content-Length: 1000\r\n\r\n".encode())
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:200]
    assert b"100 Continue" not in answer
    assert b"application/problem+json" in answer and f'/problems/{slug}"'.encode() in answer


def test_expect_100_continue_on_a_good_request_continues(small: ServerProc) -> None:
    data = os.urandom(200_000)
    got = subprocess.run([require_tool("curl"), "-sS", "-H", "Expect: 100-continue", "--data-binary", "@-",
                          small.url + "/compress?level=1"], input=data, capture_output=True, timeout=60)
    assert zstandard.decompress(got.stdout) == data


@pytest.mark.parametrize(("head", "status"), [
    (b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", 404),
    (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 404),
    (b"POST /compress HTTP/1.1\r\nHost: x\r\nExpect: 999-foo\r\nContent-Length: 3\r\n\r\nabc", 417),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nExpect: 999-foo\r\n\r\n", 417),
])
def test_every_error_is_problem_json(small: ServerProc, head: bytes, status: int) -> None:
    answer = raw(small.port, head)
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:300]
    fields, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/problem+json" in fields.lower(), fields
    assert f'"status": {status}'.encode() in body


@pytest.mark.parametrize("query", ["lvl=5", "level=3&x=1", "Level=3", "level[]=3"])
def test_unknown_query_parameters_are_400_naming_them(small: ServerProc, query: str) -> None:
    name = query.split("&")[-1].split("=")[0]
    doc = check_problem(call(small.url, "POST", "/compress?" + query, b"data"), 400)
    assert doc["type"] == "/problems/bad-parameter" and repr(name) in doc["detail"], doc
    doc = check_problem(call(small.url, "POST", "/decompress?level=3", zstandard.compress(b"x")), 400)
    assert "'level'" in doc["detail"]


@pytest.mark.parametrize("level", ["1_0", "\u0661\u0660", "+3", " 3", "3.0", "0x3"])
def test_only_plain_ascii_integers_are_levels(small: ServerProc, level: str) -> None:
    from urllib.parse import quote
    doc = check_problem(call(small.url, "POST", "/compress?level=" + quote(level), b"data"), 400)
    assert doc["type"] == "/problems/bad-level"


def test_levels_in_range_still_work(small: ServerProc) -> None:
    for level in ("-7", "0", "3", "22", "07"):
        reply = call(small.url, "POST", f"/compress?level={level}", b"abc" * 100)
        assert reply.status == 200 and zstandard.decompress(reply.body) == b"abc" * 100


def test_an_empty_decompress_body_is_400_as_zstd_says(small: ServerProc, tmp_path: Path) -> None:
    empty = tmp_path / "empty.zst"
    empty.write_bytes(b"")
    cli = subprocess.run([require_tool("zstd"), "-d", "-c", str(empty)], capture_output=True, timeout=30)
    assert cli.returncode != 0  # zstd calls empty input an error: so does the service
    for headers in ({"Content-Length": "0"}, {"Transfer-Encoding": "chunked"}):
        body = b"0\r\n\r\n" if "Transfer-Encoding" in headers else b""
        doc = check_problem(call(small.url, "POST", "/decompress", body, headers), 400)
        assert doc["type"] == "/problems/empty-body"
    assert call(small.url, "POST", "/compress", b"", {"Content-Length": "0"}).status == 200  # nothing: fine


def test_every_problem_type_leads_to_its_documentation(small: ServerProc) -> None:
    doc = check_problem(call(small.url, "GET", "/nowhere"), 404)
    page = curl("-f", small.url + doc["type"])  # the relative type, resolved against the service
    assert page.returncode == 0 and "not-found (404)" in page.stdout and "What to do" in page.stdout
    index = call(small.url, "GET", "/problems").body.decode()
    assert all(f"/problems/{slug}" in index for slug in KINDS)
    check_problem(call(small.url, "GET", "/problems/no-such-type"), 404)
