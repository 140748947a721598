"""Logs an operator can use (issue 16): every line names its process, the access line carries the
request's duration once (no second timestamp), the client comes from X-Forwarded-For only when a
trusted proxy sent it, and ``--log-format json`` writes one object per line — on the data path
and on aiohttp's alike."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.logs import client
from tests.harness import ServerProc, start_server, wait_until
from tests.harness.http import call
from warp.device.launch import stop_process

FORWARDED = {"X-Forwarded-For": "203.0.113.7, 127.0.0.1"}  # the client, then a trusted proxy


def serve(tmp_path_factory: pytest.TempPathFactory, *flags: str) -> Iterator[ServerProc]:
    base = tmp_path_factory.mktemp("logs")
    srv = start_server(base / "root", base / "server.log", "--access-log", *flags)
    yield srv
    stop_process(srv.proc)


@pytest.fixture(scope="module")
def json_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    yield from serve(tmp_path_factory, "--log-format", "json")


@pytest.fixture(scope="module")
def text_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    yield from serve(tmp_path_factory, "--forwarded-allow-ips", "")  # trusts no proxy


def access_lines(log: Path, parse: Any) -> list[Any]:
    """Access records but the harness's own readiness checks (GET /healthz)."""
    return [parse(line) for line in log.read_text().splitlines()
            if "aiohttp.access" in line and "/healthz" not in line]


def new_access_lines(log: Path, before: int, count: int, parse: Any) -> list[Any]:
    """The ``count`` access records written after the first ``before``, waiting for them."""
    wait_until(lambda: len(access_lines(log, parse)) >= before + count, 10, "the access lines", log)
    return access_lines(log, parse)[before:before + count]


def test_json_lines_carry_pid_duration_and_the_forwarded_client(json_server: ServerProc) -> None:
    before = len(access_lines(json_server.log, json.loads))
    assert call(json_server.url, "POST", "/compress?level=1", b"x" * 5000, FORWARDED).status == 200  # data path
    assert call(json_server.url, "GET", "/device", None, FORWARDED).status == 200  # aiohttp's path
    assert call(json_server.url, "POST", "/compress", b"x", {"X-Forwarded-For": "198.51.100.1",
                                                             "Content-Encoding": "gzip"}).status == 415
    records = new_access_lines(json_server.log, before, 3, json.loads)
    first, second, third = records
    assert (first["method"], first["target"], first["status"], first["remote"]) == \
        ("POST", "/compress?level=1", 200, "203.0.113.7")
    assert (second["method"], second["target"], second["status"], second["remote"]) == \
        ("GET", "/device", 200, "203.0.113.7")
    assert third["status"] == 415 and third["remote"] == "198.51.100.1"
    for record in records:
        assert record["logger"] == "aiohttp.access" and record["level"] == "INFO"
        assert isinstance(record["pid"], int) and record["pid"] > 0
        assert 0 <= record["duration"] < 10 and record["time"]
    every = [json.loads(line) for line in json_server.log.read_text().splitlines() if line]  # each one JSON
    assert any("serving on http://127.0.0.1" in line["message"] for line in every)
    assert any(line["logger"] == "warp.device" and "ready" in line["message"] for line in every)  # the device's
    assert all({"time", "pid", "level", "logger", "message"} <= line.keys() for line in every)


TEXT_ACCESS = re.compile(r'^(\S+ \S+) (\d+) aiohttp\.access INFO (\S+) "(\w+) (\S+) HTTP/1\.1" (\d{3}) (\d+) '
                         r'(\d+\.\d{6})$')


def test_text_lines_have_one_timestamp_the_pid_and_the_duration(text_server: ServerProc) -> None:
    before = len(access_lines(text_server.log, TEXT_ACCESS.match))
    assert call(text_server.url, "POST", "/compress", b"y" * 3000, FORWARDED).status == 200
    assert call(text_server.url, "GET", "/", None, FORWARDED).status == 200
    records = new_access_lines(text_server.log, before, 2, TEXT_ACCESS.match)
    assert all(records), text_server.log.read_text()[-1000:]
    for match, (method, target) in zip(records, [("POST", "/compress"), ("GET", "/")], strict=True):
        assert (match[4], match[5]) == (method, target)
        assert match[3] == "127.0.0.1"  # no trusted proxy: the header is anybody's and is ignored
        assert int(match[2]) > 0 and float(match[8]) < 10


@pytest.mark.parametrize(("peer", "header", "trusted", "expected"), [
    ("127.0.0.1", "203.0.113.7", {"127.0.0.1"}, "203.0.113.7"),
    ("10.0.0.5", "203.0.113.7", {"127.0.0.1"}, "10.0.0.5"),  # not a trusted proxy: ignored
    ("127.0.0.1", "6.6.6.6, 203.0.113.7, 10.0.0.2", {"127.0.0.1", "10.0.0.2"}, "203.0.113.7"),  # spoofed left
    ("127.0.0.1", "10.0.0.2", {"127.0.0.1", "10.0.0.2"}, "10.0.0.2"),  # only proxies: the farthest
    ("10.9.9.9", "203.0.113.7", {"*"}, "203.0.113.7"),
    ("127.0.0.1", None, {"127.0.0.1"}, "127.0.0.1"),
    ("127.0.0.1", "203.0.113.7", set(), "127.0.0.1"),
])
def test_forwarded_client(peer: str, header: str | None, trusted: set[str], expected: str) -> None:
    assert client(peer, header, trusted) == expected


@pytest.mark.parametrize(("host", "expected"), [("::1", "http://[::1]:8080"), ("127.0.0.1", "http://127.0.0.1:8080"),
                                                ("::", "http://[::]:8080")])
def test_the_start_up_line_brackets_ipv6(host: str, expected: str) -> None:
    from app.config import Config
    from app.server import url
    assert url(Config(host=host, port=8080)) == expected
