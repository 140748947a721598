"""The data path's head grammar (app/head.py): what it serves itself and what it hands to aiohttp.

A head the grammar accepts is framed by its single Content-Length alone; everything that could
frame or mean something else (a second length, Transfer-Encoding, Expect, malformed fields) must
come back as ``None`` so aiohttp, with its own checks and answers, gets the request.
"""

from __future__ import annotations

import pytest

from app.connection import FIELD_LIMIT, MAX_HEADERS, REQUEST_LINE_LIMIT
from app.head import Head, parse, response_head


def head(*lines: str, request_line: str = "POST /compress HTTP/1.1") -> Head | None:
    raw = "\r\n".join((request_line, *lines)).encode("latin-1")
    return parse(raw, REQUEST_LINE_LIMIT, FIELD_LIMIT, MAX_HEADERS)


def test_a_plain_post_is_served_here() -> None:
    parsed = head("Host: x", "Content-Length: 4096", "Content-Type: application/octet-stream")
    assert parsed is not None
    assert (parsed.route, parsed.length, parsed.keep_alive, parsed.query) == ("/compress", 4096, True, b"")
    assert parsed.target == b"/compress"


def test_query_parameters_first_one_wins() -> None:
    parsed = head("Content-Length: 1", request_line="POST /decompress?level=5&checksum=1&level=7 HTTP/1.1")
    assert parsed is not None and parsed.route == "/decompress"
    assert parsed.params() == {"level": "5", "checksum": "1"}


@pytest.mark.parametrize("value", ["close", "keep-alive, close", " Close "])
def test_connection_close_ends_the_connection_after_the_answer(value: str) -> None:
    parsed = head("Content-Length: 10", f"Connection:{value}")
    assert parsed is not None and not parsed.keep_alive


def test_whitespace_around_values_is_optional() -> None:
    parsed = head("Content-Length:\t12 ")
    assert parsed is not None and parsed.length == 12


@pytest.mark.parametrize("lines, request_line", [
    (("Content-Length: 10",), "GET /compress HTTP/1.1"),                      # another method
    (("Content-Length: 10",), "POST /healthz HTTP/1.1"),                      # another route
    (("Content-Length: 10",), "POST /compress HTTP/1.0"),                     # another version
    (("Content-Length: 10",), "POST /compress?level=%35 HTTP/1.1"),           # escapes: aiohttp decodes
    (("Content-Length: 10",), "POST  /compress HTTP/1.1"),                    # two spaces
    (("Content-Length: 10",), "POST http://x/compress HTTP/1.1"),             # absolute form
    ((), "POST /compress HTTP/1.1"),                                          # no length
    (("Content-Length: 0",), "POST /compress HTTP/1.1"),                      # empty body
    (("Content-Length: 10", "Content-Length: 10"), "POST /compress HTTP/1.1"),  # two lengths
    (("Content-Length: +10",), "POST /compress HTTP/1.1"),
    (("Content-Length: 1_0",), "POST /compress HTTP/1.1"),
    (("Content-Length: 0x10",), "POST /compress HTTP/1.1"),
    (("Content-Length: 10", "Transfer-Encoding: chunked"), "POST /compress HTTP/1.1"),  # smuggling shape
    (("Transfer-Encoding: chunked",), "POST /compress HTTP/1.1"),
    (("Content-Length: 10", "Expect: 100-continue"), "POST /compress HTTP/1.1"),
    (("Content-Length: 10", "Content-Encoding: gzip"), "POST /compress HTTP/1.1"),
    (("Content-Length: 10", "Upgrade: websocket", "Connection: upgrade"), "POST /compress HTTP/1.1"),
    (("Content-Length: 10", " folded"), "POST /compress HTTP/1.1"),            # obs-fold
    (("Content-Length: 10", "Bad Name: x"), "POST /compress HTTP/1.1"),        # space in the name
    (("Content-Length: 10", "X: a\x00b"), "POST /compress HTTP/1.1"),          # NUL
    (("Content-Length: 10", "X: a\rb"), "POST /compress HTTP/1.1"),            # bare CR
    (("Content-Length: 10\nX: y",), "POST /compress HTTP/1.1"),                # bare LF
    (("Content-Length : 10",), "POST /compress HTTP/1.1"),                     # space before the colon
])
def test_anything_else_goes_to_aiohttp(lines: tuple[str, ...], request_line: str) -> None:
    assert head(*lines, request_line=request_line) is None


def test_heads_past_aiohttp_limits_go_to_aiohttp_for_its_414_and_431() -> None:
    long_target = "POST /compress?" + "a" * REQUEST_LINE_LIMIT + " HTTP/1.1"
    assert head("Content-Length: 1", request_line=long_target) is None
    assert head("Content-Length: 1", "X: " + "v" * FIELD_LIMIT) is None
    assert head("Content-Length: 1", *[f"X-{i}: v" for i in range(MAX_HEADERS)]) is None
    assert head("Content-Length: 1", *[f"X-{i}: v" for i in range(MAX_HEADERS - 1)]) is not None


def test_response_head_carries_aiohttps_fields() -> None:
    raw = response_head(200, "OK", "application/zstd", 12, {"X-Uncompressed-Length": "40"}, False,
                        "Wed, 02 Dec 2026 12:00:00 GMT", "srv")
    assert raw == (b"HTTP/1.1 200 OK\r\nContent-Type: application/zstd\r\nContent-Length: 12\r\n"
                   b"X-Uncompressed-Length: 40\r\nConnection: close\r\nDate: Wed, 02 Dec 2026 12:00:00 GMT\r\n"
                   b"Server: srv\r\n\r\n")
