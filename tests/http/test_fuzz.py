"""Hypothesis against a real server: whatever the query string, headers and body, the answer is
either a correct zstd frame of the body or a 4xx problem document — never a 5xx, never a wrong
frame, never a hang."""

from __future__ import annotations

import urllib.parse
from typing import Any

import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

VALID = zstandard.ZstdCompressor(level=3).compress(b"fuzzing warpzip " * 64)

query_values = st.one_of(st.integers(-30, 40).map(str), st.text(max_size=8), st.sampled_from(["", "1", "0", "3"]))
queries = st.dictionaries(st.sampled_from(["level", "checksum", "x", "Level", "level[]"]), query_values, max_size=3)
headers = st.dictionaries(
    st.sampled_from(["Content-Encoding", "Content-Type", "X-Anything", "Accept-Encoding"]),
    st.sampled_from(["identity", "gzip", "br", "zstd", "deflate", "", "application/zstd", "text/plain", "*"]),
    max_size=3)
bodies = st.one_of(st.binary(max_size=4096),
                   st.integers(0, len(VALID)).map(lambda n: VALID[:n]),  # truncated frames
                   st.just(VALID), st.just(VALID + b"trailing"))

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def check_answer(reply: Any, problem: Any, server: Any) -> None:
    assert reply.status < 500, (reply.status, reply.body[:300])
    if reply.status >= 400:
        problem(reply, reply.status, server.root)


@SETTINGS
@given(query=queries, extra=headers, body=bodies)
def test_compress_fuzz(server: Any, call: Any, problem: Any, query: dict[str, str], extra: dict[str, str],
                       body: bytes) -> None:
    path = "/compress?" + urllib.parse.urlencode(query)
    reply = call(server.url, "POST", path, body, extra)
    check_answer(reply, problem, server)
    if reply.status == 200:
        assert reply.content_type == "application/zstd"
        assert zstandard.ZstdDecompressor().decompress(reply.body) == body
        assert reply.headers["X-Uncompressed-Length"] == str(len(body))


@SETTINGS
@given(extra=headers, body=bodies)
def test_decompress_fuzz(server: Any, call: Any, problem: Any, extra: dict[str, str], body: bytes) -> None:
    reply = call(server.url, "POST", "/decompress", body, extra)
    check_answer(reply, problem, server)
    if reply.status == 200:
        assert reply.body == zstandard.ZstdDecompressor().decompressobj().decompress(body)
