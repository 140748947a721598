"""The body limit (``--max-body``) on a second real server started with a 1000-byte limit.

413 must come before the body is read when Content-Length already says too much, as soon as the
limit is passed for a chunked body, and without allocating the output when a frame declares a
decompressed size over the limit.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
import zstandard

from tests.harness import ServerProc, start_server
from tests.harness.http import call, check_problem
from warp.device.launch import stop_process

LIMIT = 1000


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    """A second server whose body limit (whole or streamed) is 1000 bytes."""
    base = tmp_path_factory.mktemp("small")
    srv = start_server(base / "root", base / "server.log", "--access-log", "0", "--max-body", str(LIMIT),
                       "--max-stream", str(LIMIT))  # bodies over --max-body stream: bound those too
    yield srv
    stop_process(srv.proc)


def raw_exchange(srv: ServerProc, head: bytes, timeout: float = 5.0) -> tuple[bytes, float]:
    """Send ``head`` (request line, headers, maybe part of a body), read until the server closes or
    a full response arrived; returns the bytes and how long the answer took."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=timeout) as sock:
        start = time.monotonic()
        sock.sendall(head)
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            data += chunk
            header_end = data.find(b"\r\n\r\n")
            if header_end >= 0:
                headers = data[:header_end].decode("latin-1").lower()
                length = next((int(line.split(":", 1)[1]) for line in headers.split("\r\n")
                               if line.startswith("content-length:")), None)
                if length is not None and len(data) >= header_end + 4 + length:
                    break
        return data, time.monotonic() - start


def parse_raw(data: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    return status, headers, body


@pytest.mark.parametrize("size", [0, 1, LIMIT - 1, LIMIT])
def test_body_up_to_the_limit_is_accepted(small: ServerProc, size: int) -> None:
    data = bytes(range(256)) * 4
    data = data[:size]
    reply = call(small.url, "POST", "/compress", data)
    assert reply.status == 200, reply.body
    assert zstandard.ZstdDecompressor().decompress(reply.body) == data


@pytest.mark.parametrize("path", ["/compress", "/decompress"])
def test_declared_length_over_limit_is_413(small: ServerProc, path: str) -> None:
    reply = call(small.url, "POST", path, b"x" * (LIMIT + 1))
    doc = check_problem(reply, 413, small.root)
    assert str(LIMIT) in doc["detail"]


@pytest.mark.parametrize("path", ["/compress", "/decompress"])
def test_413_comes_before_the_body(small: ServerProc, path: str) -> None:
    """Content-Length says 100 MB, not one body byte is sent: the answer must come anyway, at once."""
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000000\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    data, elapsed = raw_exchange(small, head)
    assert data, "no answer while the body was still unsent"
    status, headers, body = parse_raw(data)
    assert status == 413, data[:500]
    assert headers["content-type"].startswith("application/problem+json")
    assert elapsed < 3.0
    doc = json.loads(body)
    assert doc["status"] == 413 and doc["type"] and doc["title"] and doc["detail"]
    assert str(small.root) not in doc["detail"]


async def _chunked(url: str, pieces: list[bytes]) -> tuple[int, str, bytes]:
    async def gen() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece
            await asyncio.sleep(0.01)

    async with aiohttp.ClientSession() as session, session.post(url, data=gen()) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.read()


@pytest.mark.parametrize("path", ["/compress", "/decompress"])
def test_chunked_body_passing_limit_is_413(small: ServerProc, path: str) -> None:
    status, content_type, body = asyncio.run(_chunked(small.url + path, [b"a" * 400] * 3))
    assert status == 413, body
    assert content_type.startswith("application/problem+json")
    assert b"Traceback" not in body and str(small.root).encode() not in body


def test_chunked_body_within_limit_is_accepted(small: ServerProc) -> None:
    pieces = [b"b" * 300, b"c" * 300, b"d" * 400]  # exactly the limit
    status, content_type, body = asyncio.run(_chunked(small.url + "/compress", pieces))
    assert status == 200, body
    assert zstandard.ZstdDecompressor().decompress(body) == b"".join(pieces)


def test_decompress_declared_size_over_limit_is_413(small: ServerProc) -> None:
    frame = zstandard.ZstdCompressor().compress(b"z" * (LIMIT + 1))
    assert len(frame) < LIMIT
    assert zstandard.get_frame_parameters(frame).content_size == LIMIT + 1
    doc = check_problem(call(small.url, "POST", "/decompress", frame), 413, small.root)
    assert doc["title"] == "Content Too Large"


def test_decompress_bomb_is_413(small: ServerProc) -> None:
    """16 MB of zeros in a few hundred bytes (one 4-byte RLE block per 128 KiB)."""
    frame = zstandard.ZstdCompressor(level=19).compress(bytes(16_000_000))
    assert len(frame) < LIMIT
    check_problem(call(small.url, "POST", "/decompress", frame), 413, small.root)


def test_decompress_undeclared_size_over_limit_is_413(small: ServerProc) -> None:
    frame = zstandard.ZstdCompressor(write_content_size=False).compress(b"q" * (LIMIT * 5))
    assert zstandard.get_frame_parameters(frame).content_size == zstandard.CONTENTSIZE_UNKNOWN
    check_problem(call(small.url, "POST", "/decompress", frame), 413, small.root)


def test_decompress_frames_summing_over_limit_is_413(small: ServerProc) -> None:
    """Each frame is under the limit, together they are over it."""
    frames = b"".join(zstandard.ZstdCompressor().compress(bytes([i]) * 600) for i in range(2))
    check_problem(call(small.url, "POST", "/decompress", frames), 413, small.root)


@pytest.mark.parametrize("declared", [True, False])
def test_decompress_exactly_the_limit_is_accepted(small: ServerProc, declared: bool) -> None:
    data = b"L" * LIMIT
    frame = zstandard.ZstdCompressor(write_content_size=declared).compress(data)
    reply = call(small.url, "POST", "/decompress", frame)
    assert reply.status == 200, reply.body
    assert reply.body == data


def test_small_server_still_healthy(small: ServerProc) -> None:
    assert call(small.url, "GET", "/healthz").json()["driver"] == "zip"
    assert call(small.url, "POST", "/compress", b"ok").status == 200
