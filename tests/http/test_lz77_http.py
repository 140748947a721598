"""``POST /compress?alg=lz77_zstd``: the HiSilicon path over HTTP, against a real server.

The engines find the matches of each ≤ 128 KiB BD, and the worker entropy-codes one frame from
them (:mod:`warp.lz77`); what comes back must be a frame the ``zstd`` CLI decodes. Bodies that
would stream are refused before they are read, since such a frame is built from all of its BDs.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import zstandard

from tests.harness import ServerProc, require_tool, start_server, wait_until
from tests.harness.http import call, check_problem
from tests.harness.metrics import metric
from warp.device.launch import stop_process

BD = 128 << 10
STREAM_ABOVE = 1 << 20


@pytest.fixture(scope="module")
def zstd_cli() -> str:
    return require_tool("zstd")


@pytest.fixture(scope="module")
def lz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    """A server whose bodies stream above 1 MiB, so the refusal is cheap to reach."""
    base = tmp_path_factory.mktemp("lz77")
    srv = start_server(base / "root", base / "server.log", "--stream-above", str(STREAM_ABOVE))
    yield srv
    stop_process(srv.proc)


@pytest.fixture(scope="module")
def text(corpus: dict[str, Path]) -> bytes:
    with corpus["xml"].open("rb") as f:
        return f.read(STREAM_ABOVE - 4096)  # eight BDs, the last one short


def unzstd(cli: str, frame: bytes, tmp_path: Path) -> tuple[bytes, str]:
    """The ``zstd`` CLI's decoding of ``frame`` and its ``-lv`` listing."""
    path = tmp_path / "body.zst"
    path.write_bytes(frame)
    listing = subprocess.run([cli, "-lv", str(path)], capture_output=True, check=True, timeout=60).stdout.decode()
    decoded = subprocess.run([cli, "-d", "-c", "-q", str(path)], capture_output=True, check=True, timeout=60).stdout
    return decoded, listing


@pytest.mark.parametrize("level", [1, 3, 12, 19])
def test_frames_decode_with_the_zstd_cli_and_the_device_ran_every_bd(lz_server: ServerProc, zstd_cli: str,
                                                                     text: bytes, tmp_path: Path,
                                                                     level: int) -> None:
    fetched = metric(lz_server.url, "warpzip_device_jobs_fetched_total")
    reply = call(lz_server.url, "POST", f"/compress?alg=lz77_zstd&level={level}", text)
    assert reply.status == 200, reply.body[:300]
    assert reply.content_type == "application/zstd"
    assert reply.headers["X-Uncompressed-Length"] == str(len(text))
    decoded, listing = unzstd(zstd_cli, reply.body, tmp_path)
    assert decoded == text
    assert len(reply.body) < len(text) / 4  # xml: the sequences were used, not stored raw
    assert "# Zstandard Frames: 1" in listing
    assert f"({len(text)} B)" in listing.split("Decompressed Size:")[1].splitlines()[0]  # the header has it
    bds = -(-len(text) // BD)
    assert metric(lz_server.url, "warpzip_device_jobs_fetched_total") - fetched >= bds


def test_checksum_reaches_the_frame(lz_server: ServerProc, zstd_cli: str, text: bytes, tmp_path: Path) -> None:
    reply = call(lz_server.url, "POST", "/compress?alg=lz77_zstd&checksum=1", text[:300_000])
    assert reply.status == 200
    decoded, listing = unzstd(zstd_cli, reply.body, tmp_path)
    assert decoded == text[:300_000]
    assert "XXH64" in listing


@pytest.mark.parametrize("body", [b"", b"\x2a", b"abc" * 5], ids=["empty", "one-byte", "under-a-match"])
def test_tiny_bodies(lz_server: ServerProc, zstd_cli: str, tmp_path: Path, body: bytes) -> None:
    reply = call(lz_server.url, "POST", "/compress?alg=lz77_zstd", body)
    assert reply.status == 200
    assert unzstd(zstd_cli, reply.body, tmp_path)[0] == body


def test_a_chunked_body_under_the_threshold(lz_server: ServerProc, zstd_cli: str, text: bytes,
                                            tmp_path: Path) -> None:
    def pieces() -> Iterator[bytes]:
        for at in range(0, 200_000, 7_000):
            yield text[at:min(at + 7_000, 200_000)]

    reply = call(lz_server.url, "POST", "/compress?alg=lz77_zstd", pieces())  # type: ignore[arg-type]
    assert reply.status == 200, reply.body[:300]
    assert unzstd(zstd_cli, reply.body, tmp_path)[0] == text[:200_000]


@pytest.mark.parametrize("query", ["alg=lz4", "alg=", "alg=ZSTD", "alg=lz77_zstd&dict=1"])
def test_bad_alg_is_a_400(lz_server: ServerProc, query: str) -> None:
    doc = check_problem(call(lz_server.url, "POST", f"/compress?{query}", b"x" * 100), 400)
    assert doc["type"] == "/problems/bad-alg"


def test_alg_zstd_is_the_default(lz_server: ServerProc, text: bytes) -> None:
    assert call(lz_server.url, "POST", "/compress?alg=zstd", text).body == call(lz_server.url, "POST",
                                                                                "/compress", text).body


def test_a_body_that_would_stream_is_a_413_before_it_is_sent(lz_server: ServerProc, tmp_path: Path) -> None:
    """Declared over ``--stream-above``: curl with ``Expect: 100-continue`` gets the 413 and sends
    no byte of the body."""
    body = tmp_path / "big"
    body.write_bytes(b"y" * (2 * STREAM_ABOVE))
    done = subprocess.run([require_tool("curl"), "-sS", "-o", str(tmp_path / "reply"), "-w",
                           "%{http_code} %{size_upload}", "-H", "Expect: 100-continue", "--data-binary",
                           f"@{body}", f"{lz_server.url}/compress?alg=lz77_zstd"],
                          capture_output=True, check=True, timeout=60).stdout.decode().split()
    assert done == ["413", "0"]
    assert b"/problems/lz77-body-too-large" in (tmp_path / "reply").read_bytes()


def test_a_chunked_body_outgrowing_the_threshold_is_a_413(lz_server: ServerProc) -> None:
    def pieces() -> Iterator[bytes]:
        for _ in range(3):
            yield b"z" * STREAM_ABOVE

    doc = check_problem(call(lz_server.url, "POST", "/compress?alg=lz77_zstd", pieces()), 413)  # type: ignore[arg-type]
    assert doc["type"] == "/problems/lz77-body-too-large"


def test_mixed_concurrent_requests_each_get_their_own_bytes(lz_server: ServerProc, text: bytes) -> None:
    """lz77_zstd requests (aiohttp's path, several BDs each) and zstd ones (the data path) at once,
    on shared keep-alive connections: every answer decodes to its own body."""
    bodies = [text[i * 9_973:i * 9_973 + 150_000 + i * 1_001] for i in range(24)]

    async def run() -> list[bytes]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=8)) as client:
            async def one(i: int) -> bytes:
                alg = "lz77_zstd" if i % 2 else "zstd"
                async with client.post(f"{lz_server.url}/compress?alg={alg}&level={1 + i % 5}",
                                       data=bodies[i]) as response:
                    assert response.status == 200
                    return await response.read()

            return await asyncio.gather(*(one(i) for i in range(len(bodies))))

    frames = asyncio.run(run())
    decoder = zstandard.ZstdDecompressor()
    assert [decoder.decompress(frame) for frame in frames] == bodies


def test_clients_leaving_before_the_answer_leave_no_buffer_behind(lz_server: ServerProc, text: bytes) -> None:
    """Whole bodies sent, then the connection closed while the BDs run: every body, destination
    and frame buffer comes back, and the next request is answered as usual."""
    host, port = lz_server.url.removeprefix("http://").split(":")
    head = (f"POST /compress?alg=lz77_zstd&level=9 HTTP/1.1\r\nHost: {host}\r\n"
            f"Content-Length: {len(text)}\r\n\r\n").encode()
    fetched = metric(lz_server.url, "warpzip_device_jobs_fetched_total")
    for _ in range(12):
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(head + text)
    bds = 12 * -(-len(text) // BD)
    wait_until(lambda: metric(lz_server.url, "warpzip_device_jobs_fetched_total") - fetched >= bds, 30,
               "the engines to run the BDs of the bodies whose clients left")
    wait_until(lambda: metric(lz_server.url, "warpzip_sva_heap_in_use_bytes") == 0, 20, "every buffer to come back")
    reply = call(lz_server.url, "POST", "/compress?alg=lz77_zstd", text)
    assert reply.status == 200 and zstandard.ZstdDecompressor().decompress(reply.body) == text


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    """The smallest heap serve accepts for 3 MiB bodies (8 MiB): an lz77_zstd job needs its body
    and ~3.7x that in BD outputs at once, which a 3 MiB body never finds there."""
    base = tmp_path_factory.mktemp("lz77-tight")
    srv = start_server(base / "root", base / "server.log", "--max-body", "3M", "--heap-size", "8M")
    yield srv
    stop_process(srv.proc)


@pytest.mark.parametrize("chunked", [False, True], ids=["declared", "chunked"])
def test_a_body_whose_bds_can_never_fit_the_heap_is_a_413_not_a_retry(tight: ServerProc, text: bytes,
                                                                      chunked: bool) -> None:
    """Not 503 "retry shortly": an idle heap could not hold it either. The detail names the largest
    body that fits, and a body of that size is served."""
    body = (text * 3)[:3 << 20]

    def pieces() -> Iterator[bytes]:
        for at in range(0, len(body), 1 << 18):
            yield body[at:at + (1 << 18)]

    doc = check_problem(call(tight.url, "POST", "/compress?alg=lz77_zstd", pieces() if chunked else body),  # type: ignore[arg-type]
                        413)
    assert doc["type"] == "/problems/lz77-body-too-large"
    largest = int(doc["detail"].split("at most ")[1].split(" bytes")[0])
    assert 64 << 10 <= largest < len(body)
    reply = call(tight.url, "POST", "/compress?alg=lz77_zstd", body[:largest])
    assert reply.status == 200 and zstandard.ZstdDecompressor().decompress(reply.body) == body[:largest]
    assert call(tight.url, "POST", "/compress?alg=lz77_zstd", body[:largest + 1]).status == 413
