"""Streams (issue 19): bodies over ``--stream-above`` go through the device block by block as they
arrive, the response chunked while the upload continues, as one zstd frame; failures before the
response head are problem documents, after it the response is cut (never a truncated success);
backpressure both ways; ``--max-stream``.

One server streams above 1 MiB, bounds streams at 80 MiB and gives an uploader 2 s per wait.
"""

from __future__ import annotations

import asyncio
import io
import json
import random
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import zstandard

from bench.events import events, multipart
from bench.proctree import snapshot_tree
from bench.soak import role
from bench.streams import CUT, body_blocks, corpus_text, post_stream
from tests.harness import ServerProc, require_tool, start_server, wait_until
from tests.harness.http import call, check_problem
from tests.harness.metrics import metric
from warp.device.launch import stop_process
from warp.zstream import highest_level

MIB = 1 << 20
MAX_STREAM = 80 * MIB
BODY_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def streaming(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    base = tmp_path_factory.mktemp("streams")
    srv = start_server(base / "root", base / "server.log", "--workers", "1", "--stream-above", "1M",
                       "--max-stream", str(MAX_STREAM), "--body-timeout", str(BODY_TIMEOUT),
                       "--data-dir", str(base / "data"))
    yield srv
    stop_process(srv.proc)


@pytest.fixture(scope="module")
def material(corpus: dict[str, Path]) -> bytes:
    return corpus_text(corpus)


def streams_ended(srv: ServerProc, direction: str, outcome: str) -> float:
    return metric(srv.url, "warpzip_streams_total", direction=direction, outcome=outcome)


def zstd_frames(tool: str, path: Path) -> int:
    listing = subprocess.run([tool, "-lv", str(path)], capture_output=True, text=True, timeout=60, check=True)
    return int(next(line for line in listing.stdout.splitlines() if "Zstandard Frames" in line).split(":")[1])


def test_large_body_streams_through_as_one_frame_and_back(streaming: ServerProc, material: bytes,
                                                          tmp_path: Path) -> None:
    zstd = require_tool("zstd")
    size = 12 * MIB + 12345
    body = b"".join(body_blocks(material, size))
    frame_path = tmp_path / "body.zst"
    with frame_path.open("wb") as out:
        status, headers = asyncio.run(post_stream(streaming.url + "/compress?level=3", iter([body]), out, size))
    assert status == 200
    assert headers.get("Transfer-Encoding") == "chunked" and "Content-Length" not in headers
    assert headers["Content-Type"] == "application/zstd"
    assert zstd_frames(zstd, frame_path) == 1
    decoded = subprocess.run([zstd, "-d", "-c", str(frame_path)], capture_output=True, timeout=60, check=True)
    assert decoded.stdout == body
    frame = frame_path.read_bytes()
    assert len(frame) < size // 2
    back = io.BytesIO()
    status, headers = asyncio.run(post_stream(streaming.url + "/decompress", iter([frame]), back, len(frame)))
    assert status == 200 and headers.get("Transfer-Encoding") == "chunked"
    assert back.getvalue() == body


def test_chunked_body_streams_once_it_outgrows_the_threshold(streaming: ServerProc, material: bytes) -> None:
    body = b"".join(body_blocks(material, 3 * MIB))
    out = io.BytesIO()
    pieces = (body[i:i + 65536] for i in range(0, len(body), 65536))
    status, headers = asyncio.run(post_stream(streaming.url + "/compress", pieces, out))
    assert status == 200 and headers.get("Transfer-Encoding") == "chunked"
    assert zstandard.ZstdDecompressor().decompressobj().decompress(out.getvalue()) == body


def test_small_chunked_body_keeps_the_whole_body_answer(streaming: ServerProc, material: bytes) -> None:
    body = material[:300_000]
    out = io.BytesIO()
    status, headers = asyncio.run(post_stream(streaming.url + "/compress", iter([body[:100_000], body[100_000:]]),
                                              out))
    assert status == 200
    assert headers["Content-Length"] == str(len(out.getvalue())) and headers["X-Uncompressed-Length"] == "300000"
    assert zstandard.ZstdDecompressor().decompress(out.getvalue()) == body


def test_declared_length_over_max_stream_is_413_before_the_body(streaming: ServerProc) -> None:
    with socket.create_connection(("127.0.0.1", streaming.port), timeout=5) as sock:
        sock.sendall(f"POST /compress HTTP/1.1\r\nHost: x\r\nContent-Length: {MAX_STREAM + 1}\r\n\r\n".encode())
        answer = sock.recv(65536)
    head, _, document = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ") and b"application/problem+json" in head
    doc = json.loads(document)
    assert doc["type"] == "/problems/body-too-large" and str(MAX_STREAM) in doc["detail"]


def test_chunked_body_passing_max_stream_is_cut(streaming: ServerProc, material: bytes) -> None:
    """The limit is passed after the response head went out: the client must see a failed transfer."""
    before = streams_ended(streaming, "compress", "cut")
    with pytest.raises(CUT):
        asyncio.run(post_stream(streaming.url + "/compress", body_blocks(material, MAX_STREAM + 4 * MIB),
                                io.BytesIO()))
    wait_until(lambda: streams_ended(streaming, "compress", "cut") == before + 1, 10, "the cut counted")


def test_corrupt_stream_is_a_problem_before_any_output(streaming: ServerProc, tmp_path: Path) -> None:
    junk = random.Random(5).randbytes(2 * MIB)
    reply = call(streaming.url, "POST", "/decompress", junk)
    doc = check_problem(reply, 400, streaming.root)
    assert doc["type"] == "/problems/corrupt-frame"


def test_truncated_frame_is_cut_after_its_output_began(streaming: ServerProc, material: bytes,
                                                       tmp_path: Path) -> None:
    """curl, a real client, exits 18 (transfer closed with outstanding read data): not a success."""
    curl = require_tool("curl")
    frame = zstandard.ZstdCompressor(level=1).compress(b"".join(body_blocks(material, 8 * MIB)))
    half = tmp_path / "half.zst"
    half.write_bytes(frame[:len(frame) // 2])
    before = streams_ended(streaming, "decompress", "cut")
    got = subprocess.run([curl, "-sS", "-o", str(tmp_path / "out"), "-w", "%{http_code}", "--data-binary",
                          f"@{half}", streaming.url + "/decompress"], capture_output=True, text=True, timeout=60)
    assert got.returncode == 18, (got.returncode, got.stderr)
    assert got.stdout == "200"  # the head had gone out; the missing last chunk is the failure
    assert 0 < (tmp_path / "out").stat().st_size < 8 * MIB
    wait_until(lambda: streams_ended(streaming, "decompress", "cut") == before + 1, 10, "the cut counted")


def test_slow_reader_stops_the_upload(streaming: ServerProc) -> None:
    """A client that does not read the response: the server must stop reading its upload (aiohttp
    pauses the socket), so the client's sends stall long before the body is through; once it
    reads, the upload resumes and the answer is complete and correct."""
    size = 64 * MIB  # under --max-stream; incompressible, so the response is as large as the body
    blocks = [random.Random(i).randbytes(MIB) for i in range(64)]
    sent = 0
    done = threading.Event()

    with socket.create_connection(("127.0.0.1", streaming.port), timeout=60) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 << 10)

        def upload() -> None:
            nonlocal sent
            sock.sendall(f"POST /compress?level=1 HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode())
            for block in blocks:
                for i in range(0, MIB, 64 << 10):
                    sock.sendall(block[i:i + (64 << 10)])
                    sent += 64 << 10
            done.set()

        sender = threading.Thread(target=upload, daemon=True)
        sender.start()
        last, still = -1, 0.0
        while still < 1.5 and not done.is_set():  # wait until the upload makes no progress for 1.5 s
            time.sleep(0.1)
            still = still + 0.1 if sent == last else 0.0
            last = sent
        assert not done.is_set(), "the whole body went up while nobody read the response"
        stalled_at = sent
        response = sock.makefile("rb")
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += response.read(1)
        assert head.startswith(b"HTTP/1.1 200 ") and b"transfer-encoding: chunked" in head.lower()
        output = zstandard.ZstdDecompressor().decompressobj()
        decoded = bytearray()
        while size_line := response.readline():
            length = int(size_line.strip(), 16)
            piece = response.read(length + 2)[:length]
            if not length:
                break
            decoded += output.decompress(piece)
        sender.join(30)
    assert done.is_set() and bytes(decoded) == b"".join(blocks)
    print(f"\nthe upload stalled at {stalled_at / MIB:.1f} MiB of {size / MIB:.0f} MiB while nobody read")
    # Socket buffers on both sides (the kernel's autotuning: up to 6 MiB received, 4 MiB to send),
    # the read-ahead window and the block on the device: about 16 MiB, whatever the body's size.
    assert stalled_at < 32 * MIB, f"the server took {stalled_at} bytes of upload while nobody read"


async def _trickle(url: str, pieces: list[bytes], gap: float, stall_after: int | None = None
                   ) -> tuple[float, float, bytes]:
    """Upload ``pieces`` ``gap`` seconds apart (pausing 2 x --body-timeout after ``stall_after`` of
    them); returns when the response head came, when the upload ended, and the body."""
    ended = 0.0

    async def gen() -> AsyncIterator[bytes]:
        nonlocal ended
        for i, piece in enumerate(pieces):
            if i == stall_after:
                await asyncio.sleep(2 * BODY_TIMEOUT)
            yield piece
            await asyncio.sleep(gap)
        ended = time.monotonic()

    async with aiohttp.ClientSession() as session, session.post(url, data=gen()) as response:
        head = time.monotonic()
        body = await response.read()
        return head, ended or time.monotonic(), body


def test_slow_uploader_streams_as_it_arrives(streaming: ServerProc, material: bytes) -> None:
    """An upload that takes longer than --body-timeout in all, but never waits that long: the
    response head (the first output) comes while the upload continues, and the answer is whole."""
    body = b"".join(body_blocks(material, 4 * MIB))
    step = 128 << 10
    pieces = [body[i:i + step] for i in range(0, len(body), step)]
    head, ended, frame = asyncio.run(_trickle(streaming.url + "/compress", pieces, gap=0.1))
    assert ended - head > 0.5, "the first output waited for the whole upload"
    assert zstandard.ZstdDecompressor().decompressobj().decompress(frame) == body


def test_stalled_uploader_is_cut_after_body_timeout(streaming: ServerProc, material: bytes) -> None:
    body = b"".join(body_blocks(material, 4 * MIB))
    pieces = [body[i:i + MIB] for i in range(0, len(body), MIB)]
    before = streams_ended(streaming, "compress", "cut")
    with pytest.raises(CUT):
        asyncio.run(_trickle(streaming.url + "/compress", pieces, gap=0.0, stall_after=3))
    wait_until(lambda: streams_ended(streaming, "compress", "cut") == before + 1, 10, "the cut counted")


def test_stream_metrics_count_bytes_and_nothing_stays_in_flight(streaming: ServerProc, material: bytes) -> None:
    before = metric(streaming.url, "warpzip_stream_input_bytes_total", direction="compress")
    ok = streams_ended(streaming, "compress", "ok")
    body = b"".join(body_blocks(material, 2 * MIB))
    assert asyncio.run(post_stream(streaming.url + "/compress", iter([body]), io.BytesIO(), len(body)))[0] == 200
    assert metric(streaming.url, "warpzip_stream_input_bytes_total", direction="compress") == before + len(body)
    assert streams_ended(streaming, "compress", "ok") == ok + 1
    for direction in ("compress", "decompress"):
        assert metric(streaming.url, "warpzip_streams_in_flight", direction=direction) == 0


def test_stream_options_are_sizes() -> None:
    from app.config import parse_serve

    config = parse_serve(["--stream-above", "8M", "--max-stream", "2G"])
    assert (config.stream_above, config.max_stream, config.stream_threshold) == (8 * MIB, 2 << 30, 8 * MIB)
    assert parse_serve(["--max-body", "1M"]).stream_threshold == MIB
    assert parse_serve([], {"WARPZIP_MAX_STREAM": "0"}).max_stream == 0


def test_client_leaving_mid_stream_is_counted_not_logged_as_an_error(streaming: ServerProc) -> None:
    before = streams_ended(streaming, "compress", "client_closed")
    with socket.create_connection(("127.0.0.1", streaming.port), timeout=10) as sock:
        sock.sendall(f"POST /compress HTTP/1.1\r\nHost: x\r\nContent-Length: {8 * MIB}\r\n\r\n".encode())
        sock.sendall(random.Random(9).randbytes(3 * MIB))
        assert sock.recv(12) == b"HTTP/1.1 200"  # the stream is under way
    wait_until(lambda: streams_ended(streaming, "compress", "client_closed") == before + 1, 10, "the departure counted")
    for direction in ("compress", "decompress"):
        assert metric(streaming.url, "warpzip_streams_in_flight", direction=direction) == 0
    assert "Traceback" not in streaming.log.read_text()


def test_stream_with_a_dictionary_round_trips(streaming: ServerProc, tmp_path: Path) -> None:
    """``?dict=`` on a stream: one frame naming the dictionary, which ``zstd -D`` decodes and a
    /decompress stream resolves; an unknown one is a 404 before the body."""
    zstd = require_tool("zstd")
    samples, content_type = multipart(events(300))
    created = call(streaming.url, "POST", "/dictionaries", samples, {"Content-Type": content_type})
    assert created.status == 201, created.body[:300]
    dict_id = created.json()["id"]
    body = b"".join(events(3000, seed=7))
    frame_path = tmp_path / "events.zst"
    with frame_path.open("wb") as out:
        status, headers = asyncio.run(post_stream(f"{streaming.url}/compress?dict={dict_id}", iter([body]), out,
                                                  len(body)))
    assert status == 200 and headers.get("Transfer-Encoding") == "chunked"
    frame = frame_path.read_bytes()
    assert zstandard.get_frame_parameters(frame).dict_id == dict_id
    (tmp_path / "events.dict").write_bytes(call(streaming.url, "GET", f"/dictionaries/{dict_id}").body)
    decoded = subprocess.run([zstd, "-q", "-d", "-c", "-D", str(tmp_path / "events.dict"), str(frame_path)],
                             capture_output=True, check=True, timeout=30)
    assert decoded.stdout == body
    back = io.BytesIO()
    assert asyncio.run(post_stream(streaming.url + "/decompress", iter([frame]), back, len(frame)))[0] == 200
    assert back.getvalue() == body
    unknown = call(streaming.url, "POST", "/compress?dict=999999", body)
    assert check_problem(unknown, 404, streaming.root)["type"] == "/problems/unknown-dictionary"


def test_decompressed_stream_passing_max_stream_is_cut(streaming: ServerProc, material: bytes) -> None:
    """A frame of fewer than --max-stream bytes whose output is more: the bomb is stopped at the
    limit, after the head (its output was flowing), so the response is cut."""
    compressor = zstandard.ZstdCompressor(level=1).compressobj()
    frame = b"".join([*(compressor.compress(block) for block in body_blocks(material, MAX_STREAM + 8 * MIB)),
                      compressor.flush()])
    assert MIB < len(frame) < MAX_STREAM
    before = streams_ended(streaming, "decompress", "cut")
    with pytest.raises(CUT):
        asyncio.run(post_stream(streaming.url + "/decompress", iter([frame]), io.BytesIO(), len(frame)))
    wait_until(lambda: streams_ended(streaming, "decompress", "cut") == before + 1, 10, "the cut counted")
    assert "the decompressed stream passed the limit" in streaming.log.read_text()


@pytest.mark.parametrize(("size", "streamed"), [(MIB, False), (MIB + 1, True)])
def test_a_body_streams_only_above_the_threshold(streaming: ServerProc, material: bytes, size: int,
                                                 streamed: bool) -> None:
    """``--stream-above 1M``: a body of exactly 1 MiB is a whole-body answer (Content-Length and
    X-Uncompressed-Length, from the data path); one byte more is a stream."""
    body = material[:size]
    reply = call(streaming.url, "POST", "/compress", body)
    assert reply.status == 200
    assert (reply.headers.get("Transfer-Encoding") == "chunked") is streamed
    assert (reply.headers.get("X-Uncompressed-Length") == str(size)) is not streamed
    assert zstandard.ZstdDecompressor().decompressobj().decompress(reply.body) == body


def _device_rss(srv: ServerProc) -> int:
    return next(s.rss_bytes for s in snapshot_tree(srv.proc.pid) if role(s, srv.proc.pid) == "device")


def _open_stream(srv: ServerProc, level: int, sent: int) -> socket.socket:
    """A /compress stream of a declared 8 MiB with ``sent`` bytes of it on the way."""
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=20)
    sock.sendall(f"POST /compress?level={level} HTTP/1.1\r\nHost: x\r\nContent-Length: {8 * MIB}\r\n\r\n".encode())
    sock.sendall(random.Random(level).randbytes(sent))
    return sock


def _answer(sock: socket.socket) -> tuple[bytes, bytes]:
    """A whole-body answer to a request still uploading: ``(head, body)``."""
    data = b""
    while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _length(data):
        chunk = sock.recv(65536)
        assert chunk, f"closed before the whole answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


def _length(data: bytes) -> int:
    lines = data.partition(b"\r\n\r\n")[0].lower().split(b"\r\n")
    return next((int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length:")), 1 << 30)


def test_streams_past_stream_memory_get_503_and_the_device_stays_bounded(tmp_path: Path) -> None:
    """A level whose context alone is over the bound is a 400 naming the highest level that fits.
    The device holds each stream's zstd context (~90 MiB at level 19; eight level-22 streams
    took a device to 2.2 GB before ``--stream-memory``). With room for two and a half level-19
    contexts, two streams run and the next ones get 503 stream-memory-full with Retry-After before
    any output (counted in the device's metrics), the device's RSS stays within the bound, and once
    a client walks away from its stream the next one is served whole."""
    from warp.codec import lib

    one = int(lib.ZSTD_estimateCStreamSize(19))
    budget = one * 5 // 2
    srv = start_server(tmp_path / "root", tmp_path / "server.log", "--workers", "1", "--stream-above", "1M",
                       "--stream-memory", str(budget))
    holders: list[socket.socket] = []
    try:
        baseline = _device_rss(srv)
        level = highest_level(budget)
        assert level is not None and level < 22
        never = call(srv.url, "POST", "/compress?level=22", random.Random(2).randbytes(2 * MIB))
        refusal = check_problem(never, 400, srv.root)  # a context over the whole bound: no retry would help
        assert refusal["type"] == "/problems/stream-context-too-large"
        assert f"level {level} or lower" in refusal["detail"]
        for _ in range(2):
            holders.append(_open_stream(srv, 19, 2 * MIB))
            assert holders[-1].recv(12) == b"HTTP/1.1 200"  # under way: its first block came out
        for _ in range(4):
            with _open_stream(srv, 19, 2 * MIB) as refused:
                head, doc = _answer(refused)
            assert head.startswith(b"HTTP/1.1 503") and b"\r\nretry-after: " in head.lower(), head
            assert json.loads(doc)["type"] == "/problems/stream-memory-full"
        assert _device_rss(srv) - baseline < budget + 96 * MIB
        assert metric(srv.url, "warpzip_device_stream_refusals_total") == 4
        assert metric(srv.url, "warpzip_device_stream_memory_limit_bytes") == budget
        assert 2 * one <= metric(srv.url, "warpzip_device_stream_memory_bytes") <= budget
        holders.pop(0).close()  # the client walks away: the worker ends its session, the record goes
        body = random.Random(5).randbytes(3 * MIB)
        out = io.BytesIO()
        status, _headers = asyncio.run(post_stream(srv.url + "/compress?level=19", iter([body]), out, len(body)))
        assert status == 200 and zstandard.ZstdDecompressor().decompressobj().decompress(out.getvalue()) == body
    finally:
        for sock in holders:
            sock.close()
        stop_process(srv.proc)
