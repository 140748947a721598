"""Hypothesis against a real server: whatever the query string, headers and body, the answer is
the one the API promises — a correct zstd frame of the body when every parameter and header is
valid, a 4xx problem document naming the fault when one is not — never a 5xx, never a wrong
frame, never a hang."""

from __future__ import annotations

import re
import urllib.parse

import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.harness import ServerProc
from tests.harness.http import Reply, call, check_problem
from warp import abi

VALID = zstandard.ZstdCompressor(level=3).compress(b"fuzzing warpzip " * 64)
LEVEL = re.compile(r"-?[0-9]{1,4}")  # ASCII digits only, as the API documents

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


def valid_level(raw: str) -> bool:
    return bool(LEVEL.fullmatch(raw)) and abi.LEVEL_MIN <= int(raw) <= abi.LEVEL_MAX


def refusals(query: dict[str, str], extra: dict[str, str], takes: frozenset[str]) -> set[int]:
    """The statuses the API owes this request before looking at the body: 400 for a query parameter
    the resource does not take or a bad value, 415 for a Content-Encoding other than identity;
    empty when the request is valid."""
    statuses = set()
    if (set(query) - takes or not valid_level(query.get("level", "3"))
            or query.get("checksum", "0") not in ("0", "1")):
        statuses.add(400)
    if extra.get("Content-Encoding", "identity").strip().lower() not in ("", "identity"):
        statuses.add(415)
    return statuses


def check_answer(reply: Reply, server: ServerProc) -> None:
    assert reply.status < 500, (reply.status, reply.body[:300])
    if reply.status >= 400:
        check_problem(reply, reply.status, server.root)


@SETTINGS
@given(query=queries, extra=headers, body=bodies)
def test_compress_fuzz(server: ServerProc, query: dict[str, str], extra: dict[str, str], body: bytes) -> None:
    reply = call(server.url, "POST", "/compress?" + urllib.parse.urlencode(query), body, extra)
    check_answer(reply, server)
    owed = refusals(query, extra, frozenset({"level", "checksum"}))
    if owed:
        assert reply.status in owed, (reply.status, owed, query, extra)
        return
    assert reply.status == 200, (reply.status, reply.body[:300], query, extra)
    assert reply.content_type == "application/zstd"
    assert zstandard.ZstdDecompressor().decompress(reply.body) == body
    assert reply.headers["X-Uncompressed-Length"] == str(len(body))
    assert zstandard.get_frame_parameters(reply.body).has_checksum == (query.get("checksum") == "1")


@SETTINGS
@given(query=queries, extra=headers, body=bodies)
def test_decompress_fuzz(server: ServerProc, query: dict[str, str], extra: dict[str, str], body: bytes) -> None:
    reply = call(server.url, "POST", "/decompress?" + urllib.parse.urlencode(query), body, extra)
    check_answer(reply, server)
    owed = refusals(query, extra, frozenset())
    if owed:
        assert reply.status in owed, (reply.status, owed, query, extra)
    elif body == VALID:  # one whole frame: the only body here that must decode
        assert reply.status == 200 and reply.body == b"fuzzing warpzip " * 64, (reply.status, reply.body[:300])
    elif reply.status == 200:
        assert reply.body == zstandard.ZstdDecompressor().decompressobj().decompress(body)
    else:
        assert reply.status == 400, (reply.status, reply.body[:300])
