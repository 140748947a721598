"""Stream mode: a large input as concatenated frames, decodable by python-zstandard across frames
and by the zstd CLI, with blocks in flight on several queues."""

from __future__ import annotations

import asyncio
import io
import subprocess
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path

import pytest
import zstandard

from tests.harness import DeviceProc, require_tool
from warp import Runtime
from warp.stream import acompress_stream, compress_stream, cut_blocks


@pytest.fixture
def runtime(device: DeviceProc) -> Iterator[Runtime]:
    rt = Runtime(device.root, driver="zip", queues=2, heap_size=128 << 20)
    yield rt
    rt.close()


def decode_all(stream: bytes) -> bytes:
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(stream), read_across_frames=True)
    return reader.read()


def testcut_blocks_are_recut_exactly() -> None:
    out = list(cut_blocks([b"ab", b"cdefg", b"", b"h"], 3))
    assert out == [b"abc", b"def", b"gh"]
    with pytest.raises(ValueError):
        list(cut_blocks([b"x"], 0))


def test_async_stream_round_trips_a_corpus_file(runtime: Runtime, corpus: dict[str, Path]) -> None:
    data = corpus["dickens"].read_bytes()[: 5 << 20]
    chunks = [data[i:i + 100_000] for i in range(0, len(data), 100_000)]  # arbitrary chunking

    async def main() -> list[bytes]:
        return [frame async for frame in acompress_stream(runtime.compressor(3), chunks, 1 << 20, window=4)]

    frames = asyncio.run(main())
    assert len(frames) == 5  # one frame per 1 MiB block
    assert all(zstandard.get_frame_parameters(f).content_size == 1 << 20 for f in frames)
    assert decode_all(b"".join(frames)) == data
    assert runtime.heap.statistics().in_use_bytes == 0


def test_sync_stream_decodes_with_the_zstd_cli(runtime: Runtime, corpus: dict[str, Path]) -> None:
    zstd = require_tool("zstd")
    data = corpus["xml"].read_bytes()[: 3 << 20] + b"tail"
    stream = b"".join(compress_stream(runtime.compressor(1), [data], 1 << 20))
    out = subprocess.run([zstd, "-d", "-c"], input=stream, capture_output=True, check=True).stdout
    assert out == data


def test_leaving_early_returns_every_buffer(runtime: Runtime) -> None:
    async def main() -> None:
        stream = acompress_stream(runtime.compressor(19), [bytes(range(256)) * 40_000], 1 << 20, window=4)
        async for _frame in stream:
            break
        assert isinstance(stream, AsyncGenerator)  # what acompress_stream is, behind its AsyncIterator type
        await stream.aclose()
        for _ in range(200):
            if runtime.heap.statistics().in_use_bytes == 0:
                return
            await asyncio.sleep(0.05)

    asyncio.run(main())
    assert runtime.heap.statistics().in_use_bytes == 0
