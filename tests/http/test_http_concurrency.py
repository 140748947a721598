"""Many requests in flight at once: every client gets the frame of its own body.

The service writes responses straight from SVA heap buffers and recycles a buffer only when the
transport let go of it, so the interesting failures are mix-ups: one request's bytes in another's
response, or a recycled buffer overwritten while a slow client is still being sent from it.
"""

from __future__ import annotations

import asyncio
import random
import socket

import aiohttp
import pytest
import zstandard

from tests.harness import ServerProc

N = 64


def make_body(i: int) -> bytes:
    """Distinct bodies of very different sizes: some random, some compressible, some empty-ish."""
    rng = random.Random(1000 + i)
    size = [0, 1, 17, 4096, 65_535, 65_536, 65_537, 300_000, 1 << 20, 1_500_000][i % 10] + rng.randrange(64)
    tag = f"<body {i}>".encode()
    if i % 3 == 0:
        payload = rng.randbytes(size)
    else:
        words = [rng.choice([b"alpha", b"beta", b"gamma", b"delta", b"epsilon"]) for _ in range(size // 5 + 1)]
        payload = b" ".join(words)[:size]
    return tag + payload


def unzstd(frame: bytes) -> bytes:
    dobj = zstandard.ZstdDecompressor().decompressobj()
    out = dobj.decompress(frame)
    assert dobj.eof and dobj.unused_data == b""
    return out


async def _compress_all(url: str, bodies: list[bytes], levels: list[int]) -> list[tuple[int, dict[str, str], bytes]]:
    connector = aiohttp.TCPConnector(limit=len(bodies), force_close=False)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = asyncio.Event()

        async def one(body: bytes, level: int) -> tuple[int, dict[str, str], bytes]:
            await start.wait()
            async with session.post(f"{url}/compress?level={level}&checksum={level % 2}", data=body) as response:
                return response.status, dict(response.headers), await response.read()

        tasks = [asyncio.create_task(one(b, lv)) for b, lv in zip(bodies, levels, strict=True)]
        await asyncio.sleep(0)
        start.set()
        return await asyncio.gather(*tasks)


@pytest.mark.parametrize("round_", range(3))
def test_64_concurrent_compress_requests_get_their_own_frame(server: ServerProc, round_: int) -> None:
    bodies = [make_body(i + 100 * round_) for i in range(N)]
    assert len(set(bodies)) == N
    levels = [[1, 3, -5, 6, 0][i % 5] for i in range(N)]
    results = asyncio.run(_compress_all(server.url, bodies, levels))
    for i, (status, headers, frame) in enumerate(results):
        assert status == 200, (i, frame[:300])
        assert headers["Content-Type"] == "application/zstd"
        assert headers["X-Uncompressed-Length"] == str(len(bodies[i])), i
        params = zstandard.get_frame_parameters(frame)
        assert params.content_size == len(bodies[i]), i
        assert params.has_checksum == bool(levels[i] % 2), i
        assert unzstd(frame) == bodies[i], f"request {i} got someone else's bytes"


def test_concurrent_compress_and_decompress_mixed(server: ServerProc) -> None:
    bodies = [make_body(500 + i) for i in range(N)]
    frames = [zstandard.ZstdCompressor(level=1).compress(b) for b in bodies]

    async def run() -> list[tuple[str, int, bytes]]:
        connector = aiohttp.TCPConnector(limit=N)
        async with aiohttp.ClientSession(connector=connector) as session:
            async def one(i: int) -> tuple[str, int, bytes]:
                route, data = ("/decompress", frames[i]) if i % 2 else ("/compress", bodies[i])
                async with session.post(server.url + route, data=data) as response:
                    return route, response.status, await response.read()

            return await asyncio.gather(*(one(i) for i in range(N)))

    for i, (route, status, payload) in enumerate(asyncio.run(run())):
        assert status == 200, (i, route, payload[:300])
        got = payload if route == "/decompress" else unzstd(payload)
        assert got == bodies[i], f"{route} request {i} got someone else's bytes"


def test_slow_reader_is_not_overwritten_by_later_requests(server: ServerProc) -> None:
    """A client that does not read its 4 MiB response for a while, while 32 others churn the buffer
    pool: its bytes must still be its own when it finally reads them."""
    body = random.Random(7).randbytes(4 << 20)

    async def run() -> bytes:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 16)
        writer.write(f"POST /compress?level=1 HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
                     "Connection: close\r\n\r\n".encode() + body)
        await writer.drain()
        # while this client reads nothing, others take and return buffers
        for round_ in range(3):
            others = [random.Random(round_ * 100 + i).randbytes((4 << 20) - i) for i in range(32)]
            results = await _compress_all(server.url, others, [1] * len(others))
            for i, (status, _, frame) in enumerate(results):
                assert status == 200
                assert unzstd(frame) == others[i]
        raw = await reader.read()
        writer.close()
        return raw

    raw = asyncio.run(run())
    head, _, frame = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert unzstd(frame) == body
