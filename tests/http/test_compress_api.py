"""POST /compress and POST /decompress against a real server (embedded device, loopback port).

Every frame the service returns is checked with python-zstandard, never with the service itself;
every error is checked to be an RFC 9457 problem document that names no path of the host.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import zstandard

from tests.harness import ServerProc
from tests.harness.http import call, check_problem

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@pytest.fixture(scope="module")
def text(corpus: dict[str, Path]) -> bytes:
    """256 KiB of English text: compressible, and different at every level."""
    with corpus["dickens"].open("rb") as f:
        return f.read(256 << 10)


@pytest.fixture(scope="module")
def binary(corpus: dict[str, Path]) -> bytes:
    with corpus["x-ray"].open("rb") as f:
        f.seek(1 << 20)
        return f.read(192 << 10)


def unzstd(frame: bytes) -> bytes:
    """Decompress with python-zstandard, requiring exactly one frame with its content size."""
    params = zstandard.get_frame_parameters(frame)
    assert params.content_size != zstandard.CONTENTSIZE_UNKNOWN
    dobj = zstandard.ZstdDecompressor().decompressobj()
    out = dobj.decompress(frame)
    assert dobj.eof, "the frame is incomplete"
    assert dobj.unused_data == b"", "bytes after the frame"
    assert len(out) == params.content_size
    return out


def check_frame(reply, data: bytes) -> zstandard.FrameParameters:  # type: ignore[no-untyped-def]
    assert reply.status == 200, reply.body[:500]
    assert reply.content_type == "application/zstd"
    assert reply.headers["X-Uncompressed-Length"] == str(len(data))
    assert reply.headers["Content-Length"] == str(len(reply.body))
    assert reply.body[:4] == ZSTD_MAGIC
    params = zstandard.get_frame_parameters(reply.body)
    assert params.content_size == len(data)
    assert unzstd(reply.body) == data
    return params


# --- POST /compress: happy paths --------------------------------------------------------------


def test_compress_default_level_round_trips(server: ServerProc, text: bytes) -> None:
    reply = call(server.url, "POST", "/compress", text)
    params = check_frame(reply, text)
    assert not params.has_checksum
    assert len(reply.body) < len(text) // 2  # dickens compresses well at level 3


def test_default_level_is_3(server: ServerProc, text: bytes) -> None:
    default = call(server.url, "POST", "/compress", text)
    level3 = call(server.url, "POST", "/compress?level=3", text)
    assert default.status == level3.status == 200
    assert default.body == level3.body


@pytest.mark.parametrize("level", [-7, -1, 0, 1, 3, 19, 22])
def test_compress_levels_round_trip(server: ServerProc, text: bytes, level: int) -> None:
    reply = call(server.url, "POST", f"/compress?level={level}", text)
    check_frame(reply, text)


def test_levels_are_applied(server: ServerProc, text: bytes) -> None:
    """Higher levels give smaller frames on text: the level reaches the engine."""
    sizes = {level: len(call(server.url, "POST", f"/compress?level={level}", text).body) for level in (-7, 1, 19)}
    assert sizes[-7] > sizes[1] > sizes[19], sizes


def test_compress_binary_round_trips(server: ServerProc, binary: bytes) -> None:
    check_frame(call(server.url, "POST", "/compress?level=1", binary), binary)


def test_compress_incompressible_round_trips(server: ServerProc) -> None:
    data = os.urandom(300_000)
    check_frame(call(server.url, "POST", "/compress", data), data)


@pytest.mark.parametrize("level", [1, 19])
def test_checksum_flag_sets_frame_checksum(server: ServerProc, text: bytes, level: int) -> None:
    reply = call(server.url, "POST", f"/compress?level={level}&checksum=1", text)
    params = check_frame(reply, text)
    assert params.has_checksum
    # the checksum is right: a decompressor that verifies it accepts the frame
    assert zstandard.ZstdDecompressor().decompress(reply.body) == text


def test_checksum_zero_means_no_checksum(server: ServerProc, text: bytes) -> None:
    reply = call(server.url, "POST", "/compress?checksum=0", text)
    assert not check_frame(reply, text).has_checksum


def test_compress_empty_body(server: ServerProc) -> None:
    reply = call(server.url, "POST", "/compress", b"", {"Content-Length": "0"})
    params = check_frame(reply, b"")
    assert params.content_size == 0


def test_compress_empty_body_with_checksum(server: ServerProc) -> None:
    reply = call(server.url, "POST", "/compress?checksum=1&level=19", b"", {"Content-Length": "0"})
    assert check_frame(reply, b"").has_checksum


@pytest.mark.parametrize("data", [b"\x00", b"A", b"\xff"])
def test_compress_one_byte_body(server: ServerProc, data: bytes) -> None:
    check_frame(call(server.url, "POST", "/compress", data), data)


def test_identity_content_encoding_is_accepted(server: ServerProc) -> None:
    data = b"identity " * 100
    check_frame(call(server.url, "POST", "/compress", data, {"Content-Encoding": "identity"}), data)


async def _chunked_post(url: str, pieces: list[bytes]) -> tuple[int, dict[str, str], bytes]:
    async def gen() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece
            await asyncio.sleep(0)

    async with aiohttp.ClientSession() as session, session.post(url, data=gen()) as response:
        assert response.request_info.headers.get("Transfer-Encoding") == "chunked"
        assert "Content-Length" not in response.request_info.headers
        return response.status, dict(response.headers), await response.read()


@pytest.mark.parametrize("sizes", [
    [1000, 5, 70_000, 1, 200_000, 65_536, 3],  # passes the first 64 KiB block and grows twice
    [1] * 500,                                  # many tiny chunks
    [65_536],                                   # exactly the first block
    [1 << 20],                                  # one big chunk
], ids=["uneven", "tiny", "one-block", "one-mib"])
def test_chunked_upload_round_trips(server: ServerProc, text: bytes, sizes: list[int]) -> None:
    data = (text * (1 + sum(sizes) // len(text)))[:sum(sizes)]
    pieces, at = [], 0
    for size in sizes:
        pieces.append(data[at:at + size])
        at += size
    status, headers, body = asyncio.run(_chunked_post(server.url + "/compress?level=1", pieces))
    assert status == 200, body[:500]
    assert headers["Content-Type"] == "application/zstd"
    assert headers["X-Uncompressed-Length"] == str(len(data))
    assert zstandard.get_frame_parameters(body).content_size == len(data)
    assert unzstd(body) == data


def test_chunked_empty_upload(server: ServerProc) -> None:
    status, headers, body = asyncio.run(_chunked_post(server.url + "/compress", []))
    assert status == 200, body[:500]
    assert headers["X-Uncompressed-Length"] == "0"
    assert unzstd(body) == b""


def test_keep_alive_connection_serves_many_requests(server: ServerProc) -> None:
    """Several requests on one connection: each answer belongs to its own request."""
    async def run() -> None:
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=connector) as session:
            for i in range(20):
                data = os.urandom(i * 997) + bytes([i]) * i * 100
                async with session.post(server.url + "/compress", data=data) as response:
                    assert response.status == 200
                    assert unzstd(await response.read()) == data

    asyncio.run(run())


# --- POST /compress: rejected requests --------------------------------------------------------


@pytest.mark.parametrize("raw", ["x", "23", "-8", "1.5", "", "3x", "0x3", "1e1", "99999999999999999999"])
def test_bad_level_is_400(server: ServerProc, raw: str) -> None:
    reply = call(server.url, "POST", f"/compress?level={raw}", b"data")
    doc = check_problem(reply, 400, server.root)
    assert "level" in doc["detail"]
    assert doc["title"] == "Bad Request"


@pytest.mark.parametrize("raw", ["2", "true", "yes", "-1", "", "01"])
def test_bad_checksum_is_400(server: ServerProc, raw: str) -> None:
    reply = call(server.url, "POST", f"/compress?checksum={raw}", b"data")
    doc = check_problem(reply, 400, server.root)
    assert "checksum" in doc["detail"]


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd", "x-custom"])
def test_content_encoding_is_415(server: ServerProc, encoding: str) -> None:
    data = b"hello " * 1000
    body = {"gzip": gzip.compress(data), "deflate": zlib.compress(data)}.get(encoding, data)
    reply = call(server.url, "POST", "/compress", body, {"Content-Encoding": encoding})
    doc = check_problem(reply, 415, server.root)
    assert encoding in doc["detail"]


def test_gzip_body_that_is_not_gzip_is_415(server: ServerProc) -> None:
    reply = call(server.url, "POST", "/compress", b"plain, not gzip" * 100, {"Content-Encoding": "gzip"})
    check_problem(reply, 415, server.root)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
@pytest.mark.parametrize("path", ["/compress", "/decompress"])
def test_wrong_method_is_405_with_allow(server: ServerProc, method: str, path: str) -> None:
    reply = call(server.url, method, path)
    doc = check_problem(reply, 405, server.root)
    assert "POST" in reply.headers["Allow"]
    assert doc["title"] == "Method Not Allowed"


@pytest.mark.parametrize("path", ["/nope", "/compress/extra", "/COMPRESS", "/metrics/x", "/../etc/passwd"])
def test_unknown_path_is_404(server: ServerProc, path: str) -> None:
    check_problem(call(server.url, "GET", path), 404, server.root)


def test_unknown_path_post_is_404(server: ServerProc) -> None:
    check_problem(call(server.url, "POST", "/zip", b"data"), 404, server.root)


def test_server_still_healthy_after_errors(server: ServerProc, text: bytes) -> None:
    """The rejected requests above left the worker fine: a normal request still round-trips."""
    check_frame(call(server.url, "POST", "/compress", text), text)
    assert call(server.url, "GET", "/healthz").status == 200


# --- POST /decompress ---------------------------------------------------------------------------


def check_plain(reply, data: bytes) -> None:  # type: ignore[no-untyped-def]
    assert reply.status == 200, reply.body[:500]
    assert reply.content_type == "application/octet-stream"
    assert reply.headers["X-Uncompressed-Length"] == str(len(data))
    assert reply.headers["Content-Length"] == str(len(data))
    assert reply.body == data


@pytest.mark.parametrize("name", ["dickens", "mr", "x-ray", "xml"])
def test_decompress_round_trips_corpus_slice(server: ServerProc, corpus: dict[str, Path], name: str) -> None:
    with corpus[name].open("rb") as f:
        data = f.read(512 << 10)
    frame = zstandard.ZstdCompressor(level=3).compress(data)
    check_plain(call(server.url, "POST", "/decompress", frame), data)


def test_decompress_of_service_frame(server: ServerProc, text: bytes) -> None:
    frame = call(server.url, "POST", "/compress?level=19&checksum=1", text).body
    check_plain(call(server.url, "POST", "/decompress", frame), text)


def test_decompress_frame_without_content_size(server: ServerProc, text: bytes) -> None:
    frame = zstandard.ZstdCompressor(write_content_size=False).compress(text)
    assert zstandard.get_frame_parameters(frame).content_size == zstandard.CONTENTSIZE_UNKNOWN
    check_plain(call(server.url, "POST", "/decompress", frame), text)


def test_decompress_streamed_frame(server: ServerProc, text: bytes) -> None:
    """A frame written by a streaming compressor (several blocks, no declared size)."""
    stream = zstandard.ZstdCompressor(level=1).compressobj()
    frame = b"".join([stream.compress(text[at:at + 4096]) for at in range(0, len(text), 4096)]) + stream.flush()
    check_plain(call(server.url, "POST", "/decompress", frame), text)


def test_decompress_concatenated_frames(server: ServerProc, text: bytes) -> None:
    parts = [text[:1000], text[1000:50_000], b"", text[50_000:]]
    frames = b"".join(zstandard.ZstdCompressor(level=1).compress(p) for p in parts)
    check_plain(call(server.url, "POST", "/decompress", frames), text)


def test_decompress_empty_frame(server: ServerProc) -> None:
    frame = zstandard.ZstdCompressor().compress(b"")
    check_plain(call(server.url, "POST", "/decompress", frame), b"")


def test_decompress_one_byte_frame(server: ServerProc) -> None:
    frame = zstandard.ZstdCompressor().compress(b"Z")
    check_plain(call(server.url, "POST", "/decompress", frame), b"Z")


def test_decompress_chunked_upload(server: ServerProc, text: bytes) -> None:
    frame = zstandard.ZstdCompressor(level=3).compress(text)
    pieces = [frame[i:i + 777] for i in range(0, len(frame), 777)]
    status, headers, body = asyncio.run(_chunked_post(server.url + "/decompress", pieces))
    assert status == 200
    assert headers["X-Uncompressed-Length"] == str(len(text))
    assert body == text


@pytest.mark.parametrize("body", [
    b"this is not zstd at all" * 10,
    b"\x28\xb5\x2f\xfd" + b"\xff" * 64,  # right magic, nonsense header
    b"\x00",
], ids=["text", "bad-header", "one-byte"])
def test_decompress_corrupt_frame_is_400(server: ServerProc, body: bytes) -> None:
    doc = check_problem(call(server.url, "POST", "/decompress", body), 400, server.root)
    assert doc["type"].endswith("corrupt-frame")


def test_decompress_corrupted_block_is_400(server: ServerProc, text: bytes) -> None:
    frame = bytearray(zstandard.ZstdCompressor(level=3, write_checksum=True).compress(text))
    middle = len(frame) // 2
    for i in range(middle, middle + 64):
        frame[i] ^= 0x5A
    check_problem(call(server.url, "POST", "/decompress", bytes(frame)), 400, server.root)


def test_decompress_bad_checksum_is_400(server: ServerProc, text: bytes) -> None:
    frame = bytearray(zstandard.ZstdCompressor(level=3, write_checksum=True).compress(text))
    frame[-1] ^= 0xFF  # the last 4 bytes are the xxhash checksum
    check_problem(call(server.url, "POST", "/decompress", bytes(frame)), 400, server.root)


@pytest.mark.parametrize("keep", [4, 10, 0.5, -1])
def test_decompress_truncated_frame_is_400(server: ServerProc, text: bytes, keep: int | float) -> None:
    frame = zstandard.ZstdCompressor(level=3).compress(text)
    cut = frame[:int(len(frame) * keep)] if isinstance(keep, float) else frame[:keep]
    doc = check_problem(call(server.url, "POST", "/decompress", cut), 400, server.root)
    assert doc["type"].endswith("corrupt-frame")


def test_decompress_trailing_garbage_is_400(server: ServerProc, text: bytes) -> None:
    frame = zstandard.ZstdCompressor(level=3).compress(text)
    check_problem(call(server.url, "POST", "/decompress", frame + b"garbage!"), 400, server.root)


def test_decompress_rejects_content_encoding(server: ServerProc) -> None:
    frame = zstandard.ZstdCompressor().compress(b"x" * 100)
    check_problem(call(server.url, "POST", "/decompress", gzip.compress(frame), {"Content-Encoding": "gzip"}),
            415, server.root)


def test_decompress_skippable_frame_only(server: ServerProc) -> None:
    skippable = b"\x50\x2a\x4d\x18" + (4).to_bytes(4, "little") + b"meta"
    frame = zstandard.ZstdCompressor().compress(b"after the skippable frame")
    check_plain(call(server.url, "POST", "/decompress", skippable), b"")
    check_plain(call(server.url, "POST", "/decompress", skippable + frame), b"after the skippable frame")


def test_decompress_empty_body(server: ServerProc) -> None:
    """No frames at all: either nothing comes out, or it is a clean 400 problem."""
    reply = call(server.url, "POST", "/decompress", b"", {"Content-Length": "0"})
    if reply.status == 200:
        check_plain(reply, b"")
    else:
        check_problem(reply, 400, server.root)


def test_error_bodies_never_leak(server: ServerProc) -> None:
    """A sweep of bad requests: no answer names the runtime root, a source file, or a traceback.
    (A 404 echoes the request path, so no request here names the root itself.)"""
    bad = [("POST", "/compress?level=abc", b"x"), ("POST", "/compress?checksum=maybe", b"x"),
           ("POST", "/decompress", b"\x28\xb5\x2f\xfd" + os.urandom(100)), ("POST", "/decompress", os.urandom(5000)),
           ("GET", "/compress", None), ("GET", "/dev/warp_zip-0", None),
           ("GET", "/sys/class/uacce", None), ("DELETE", "/metrics", None)]
    for method, path, body in bad:
        reply = call(server.url, method, path, body)
        assert 400 <= reply.status < 500, (method, path, reply.status)
        text = reply.body.decode("utf-8", "replace")
        assert "Traceback" not in text and str(server.root) not in text and ".py" not in text, (path, text)
