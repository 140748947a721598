"""Stream sessions: any input as one zstd frame, stateful BDs on one queue with a ctx_buf, and the
same bytes from the cpu driver."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zstandard

from tests.harness import DeviceProc, require_tool, start_device
from warp import JobFailed, Runtime, abi
from warp.device.launch import stop_process
from warp.stream import CompressStream, DecompressStream


@pytest.fixture
def runtime(device: DeviceProc) -> Iterator[Runtime]:
    rt = Runtime(device.root, driver="zip", queues=2, heap_size=128 << 20)
    yield rt
    rt.close()


async def compress_chunks(stream: CompressStream, chunks: list[bytes]) -> bytes:
    out = [await stream.acompress(chunk) for chunk in chunks]
    return b"".join(out) + await stream.afinish()


async def decompress_all(stream: DecompressStream, chunks: list[bytes]) -> list[bytes]:
    pieces = [piece for chunk in chunks async for piece in stream.adecompress(chunk)]
    await stream.afinish()
    return pieces


def one_frame_decode(frame: bytes) -> bytes:
    """Decode the first frame only: all of the content must be in it."""
    obj = zstandard.ZstdDecompressor().decompressobj()
    content = obj.decompress(frame)
    assert obj.eof and not obj.unused_data
    return content


def test_chunks_become_one_frame_that_the_zstd_cli_decodes(runtime: Runtime, corpus: dict[str, Path]) -> None:
    zstd = require_tool("zstd")
    data = corpus["dickens"].read_bytes()[: 5 << 20]
    chunks = [data[i:i + 100_000] for i in range(0, len(data), 100_000)]  # not aligned to the 1 MiB BDs
    before = runtime.statistics().device
    assert before is not None

    frame = asyncio.run(compress_chunks(runtime.compress_stream(3, checksum=True), chunks))

    assert one_frame_decode(frame) == data  # one frame holds every byte
    assert zstandard.get_frame_parameters(frame).has_checksum
    out = subprocess.run([zstd, "-d", "-c"], input=frame, capture_output=True, check=True).stdout
    assert out == data
    after = runtime.statistics().device
    assert after is not None and after.completed - before.completed >= len(chunks)  # every BD on the device
    assert runtime.heap.statistics().in_use_bytes == 0


def test_one_frame_is_smaller_than_a_frame_per_block(runtime: Runtime, corpus: dict[str, Path]) -> None:
    """Matches reach back across BD boundaries: what a frame per block loses."""
    data = corpus["xml"].read_bytes()[: 4 << 20]
    frame = asyncio.run(compress_chunks(runtime.compress_stream(3), [data]))
    per_block = sum(len(runtime.compress(data[i:i + (1 << 20)], 3)) for i in range(0, len(data), 1 << 20))
    assert one_frame_decode(frame) == data
    assert len(frame) < per_block


def test_the_cpu_driver_produces_the_same_frame(runtime: Runtime, corpus: dict[str, Path]) -> None:
    data = corpus["mr"].read_bytes()[: 3 << 20]
    chunks = [data[i:i + 700_000] for i in range(0, len(data), 700_000)]
    on_device = asyncio.run(compress_chunks(runtime.compress_stream(5), chunks))
    with Runtime(driver="cpu", heap_size=64 << 20) as cpu:
        stream = cpu.compress_stream(5)
        assert not stream.on_device
        on_cpu = asyncio.run(compress_chunks(stream, chunks))
        assert asyncio.run(decompress_all(cpu.decompress_stream(), [on_cpu])) != []
    assert on_cpu == on_device


def test_decompression_yields_bounded_pieces_of_a_bomb(runtime: Runtime) -> None:
    bomb = zstandard.ZstdCompressor(level=3).compress(bytes(64 << 20))  # 64 MiB of zeros in a few KiB

    async def main() -> tuple[int, int]:
        stream = runtime.decompress_stream()
        biggest = total = 0
        async for piece in stream.adecompress(bomb):
            biggest, total = max(biggest, len(piece)), total + len(piece)
        await stream.afinish()
        return biggest, total

    biggest, total = asyncio.run(main())
    assert total == 64 << 20
    assert biggest <= 1 << 20
    assert runtime.heap.statistics().in_use_bytes == 0


def test_frames_fed_byte_by_odd_pieces_decode_across_frame_boundaries(runtime: Runtime) -> None:
    first, second = b"first frame " * 5000, bytes(np.random.default_rng(7).integers(0, 255, 300_000, np.uint8))
    stream = zstandard.ZstdCompressor().compress(first) + zstandard.ZstdCompressor(level=1).compress(second)
    pieces = [stream[i:i + 777] for i in range(0, len(stream), 777)]
    out = asyncio.run(decompress_all(runtime.decompress_stream(), pieces))
    assert b"".join(out) == first + second


def test_truncated_and_corrupt_input_fail(runtime: Runtime) -> None:
    frame = zstandard.ZstdCompressor().compress(b"abc" * 100_000)
    with pytest.raises(JobFailed) as truncated:
        asyncio.run(decompress_all(runtime.decompress_stream(), [frame[:-10]]))
    assert truncated.value.status == abi.Status.CORRUPT_INPUT
    with pytest.raises(JobFailed) as corrupt:
        asyncio.run(decompress_all(runtime.decompress_stream(), [b"\x28\xb5\x2f\xfd" + b"\xff" * 64]))
    assert corrupt.value.status == abi.Status.CORRUPT_INPUT
    assert runtime.heap.statistics().in_use_bytes == 0


def test_a_clobbered_ctx_buf_fails_the_next_bd_with_bad_ctx(runtime: Runtime) -> None:
    """The engine checks its record in the ctx_buf: a session that overwrote (or freed and reused)
    its ctx_buf gets BAD_CTX, never another stream's state."""

    async def main() -> None:
        stream = runtime.compress_stream(3)
        await stream.acompress(b"hello " * 1000)
        assert stream._ctx is not None
        stream._ctx.write(0, bytes(32))  # what a stray write into the session's memory does
        await stream.acompress(b"more")

    with pytest.raises(JobFailed) as failed:
        asyncio.run(main())
    assert failed.value.status == abi.Status.BAD_CTX
    assert runtime.heap.statistics().in_use_bytes == 0


def test_a_cancelled_stream_returns_every_buffer(runtime: Runtime) -> None:
    data = bytes(np.random.default_rng(1).integers(0, 4, 8 << 20, np.uint8))

    async def main() -> None:
        stream = runtime.compress_stream(19)  # slow BDs: the cancel lands while one runs
        task = asyncio.ensure_future(stream.acompress(data))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert stream.closed
        for _ in range(400):
            if runtime.heap.statistics().in_use_bytes == 0:
                return
            await asyncio.sleep(0.05)

    asyncio.run(main())
    assert runtime.heap.statistics().in_use_bytes == 0


def test_a_closed_stream_refuses_calls(runtime: Runtime) -> None:
    async def main() -> None:
        async with runtime.compress_stream() as stream:
            await stream.acompress(b"x")
        await stream.acompress(b"y")

    with pytest.raises(Exception, match="closed"):
        asyncio.run(main())
    with pytest.raises(ValueError):
        CompressStream(runtime, level=99)


def test_stream_contexts_are_bounded_by_stream_memory(tmp_path: Path) -> None:
    """The engines keep stream contexts in device memory (this model's difference, docs/device.md
    §6.1), so ``--stream-memory`` bounds them: a stream whose first BD would take the held contexts
    over it fails ``NO_CTX_MEMORY`` before anything is allocated (a level-19 context is ~90 MiB, so
    unbounded streams took a device to gigabytes). A session that ends wipes its ctx_buf's record,
    and the engines let such contexts go when they need the room: a stream abandoned mid-frame
    frees its share too."""
    from warp.codec import lib

    one = int(lib.ZSTD_estimateCStreamSize(19))
    dev = start_device(tmp_path / "root", "--stream-memory", str(one * 5 // 2))
    block = b"stream memory " * 5000

    async def main(rt: Runtime) -> None:
        first, second, third = (rt.compress_stream(19) for _ in range(3))
        await first.acompress(block)
        kept = await second.acompress(block)
        with pytest.raises(JobFailed) as refused:
            await third.acompress(block)
        assert refused.value.status == abi.Status.NO_CTX_MEMORY and third.closed
        first.close()  # abandoned mid-frame: its context is dead once its record is wiped
        taken = rt.alloc(abi.STREAM_CTX_SIZE)  # the freed ctx_buf's memory: the next stream's is elsewhere
        fourth = rt.compress_stream(19)
        frame = await fourth.acompress(block) + await fourth.afinish()
        assert zstandard.ZstdDecompressor().decompressobj().decompress(frame) == block
        frame = kept + await second.acompress(block) + await second.afinish()  # the live one was never touched
        assert zstandard.ZstdDecompressor().decompressobj().decompress(frame) == block * 2
        taken.release()

    try:
        with Runtime(dev.root, driver="zip", heap_size=64 << 20) as rt:
            asyncio.run(main(rt))
    finally:
        stop_process(dev.proc)
    assert dev.proc.returncode == 0


def test_cpu_stream_contexts_are_bounded_by_the_runtimes_stream_memory() -> None:
    """Without a device the contexts live in this process, under the same bound: the third
    level-19 stream does not fit two and a half, and a closed one gives its share back."""
    from warp.codec import lib

    block = b"cpu stream memory " * 4000

    async def main(rt: Runtime) -> None:
        first, second, third = (rt.compress_stream(19) for _ in range(3))
        await first.acompress(block)
        await second.acompress(block)
        with pytest.raises(JobFailed) as refused:
            await third.acompress(block)
        assert refused.value.status == abi.Status.NO_CTX_MEMORY and third.closed
        first.close()
        fourth = rt.compress_stream(19)
        frame = await fourth.acompress(block) + await fourth.afinish()
        assert zstandard.ZstdDecompressor().decompressobj().decompress(frame) == block
        second.close()
        assert rt.stream_memory.charged == 0

    one = int(lib.ZSTD_estimateCStreamSize(19))
    with Runtime(driver="cpu", heap_size=16 << 20, stream_memory=one * 5 // 2) as rt:
        asyncio.run(main(rt))


def test_a_decompression_stream_is_charged_the_window_its_frame_declares(tmp_path: Path) -> None:
    """A decompression context's footprint is read from the frame header its first BD carries:
    a frame declaring a 128 MiB window (``--long=27``, no content size) does not fit 16 MiB of
    stream memory, on the device or on the cpu driver, while a level-3 frame's 2 MiB window does."""
    def streamed(params: zstandard.ZstdCompressionParameters | None, data: bytes) -> bytes:
        compressor = zstandard.ZstdCompressor(compression_params=params).compressobj()
        return compressor.compress(data) + compressor.flush()

    data = b"window " * 20000
    wide = streamed(zstandard.ZstdCompressionParameters(window_log=27, enable_ldm=True), data)
    narrow = streamed(None, data)
    assert zstandard.get_frame_parameters(wide).window_size == 1 << 27

    async def decode(rt: Runtime, frame: bytes) -> bytes:
        stream = rt.decompress_stream()
        out = b"".join([piece async for piece in stream.adecompress(frame)])
        await stream.afinish()
        return out

    budget = 16 << 20
    dev = start_device(tmp_path / "root", "--stream-memory", str(budget))
    try:
        for rt in (Runtime(dev.root, driver="zip", heap_size=32 << 20),
                   Runtime(driver="cpu", heap_size=32 << 20, stream_memory=budget)):
            with rt:
                with pytest.raises(JobFailed) as refused:
                    asyncio.run(decode(rt, wide))
                assert refused.value.status == abi.Status.NO_CTX_MEMORY, rt.driver.name
                assert asyncio.run(decode(rt, narrow)) == data
    finally:
        stop_process(dev.proc)


def test_many_concurrent_streams_on_one_queue_all_finish(device: DeviceProc) -> None:
    """Forty streams in progress at once on one queue, each past its first BD before any ends: a
    new stream never evicts a live one (only --stream-memory refuses new ones), so every frame is
    whole."""
    blocks = [b"stream %d " % i * 3000 for i in range(40)]

    async def main(rt: Runtime) -> list[bytes]:
        streams = [rt.compress_stream(1) for _ in blocks]
        heads = [await s.acompress(b) for s, b in zip(streams, blocks, strict=True)]
        return [h + await s.acompress(b) + await s.afinish() for s, b, h in zip(streams, blocks, heads, strict=True)]

    with Runtime(device.root, driver="zip", heap_size=64 << 20, queues=1) as rt:
        frames = asyncio.run(main(rt))
    assert [zstandard.ZstdDecompressor().decompressobj().decompress(f) for f in frames] == [b * 2 for b in blocks]


def test_a_context_mid_first_bd_is_not_swept_as_dead(tmp_path: Path) -> None:
    """The sweep for room lets go of contexts whose ctx_buf lacks their record; a context whose
    first BD is still running on another engine must carry its record already, or a stream that
    does not fit would evict a live one (its next BD then failed BAD_CTX)."""
    from warp.codec import lib

    one = int(lib.ZSTD_estimateCStreamSize(19))
    dev = start_device(tmp_path / "root", "--engines", "2", "--stream-memory", str(one * 3 // 2))
    block = bytes(np.random.default_rng(5).integers(0, 16, 1 << 20, np.uint8))  # a slow first BD at level 19

    async def main(rt: Runtime) -> None:
        first = rt.compress_stream(19)
        running = asyncio.ensure_future(first.acompress(block))
        await asyncio.sleep(0.02)  # its BD is on an engine now; the next stream takes the other queue
        second = rt.compress_stream(19)
        with pytest.raises(JobFailed) as refused:
            await second.acompress(block)
        assert refused.value.status == abi.Status.NO_CTX_MEMORY
        frame = await running + await first.acompress(b"more") + await first.afinish()
        assert zstandard.ZstdDecompressor().decompressobj().decompress(frame) == block + b"more"

    try:
        with Runtime(dev.root, driver="zip", heap_size=64 << 20, queues=2) as rt:
            asyncio.run(main(rt))
    finally:
        stop_process(dev.proc)


def test_a_stream_whose_context_alone_is_over_the_bound_fails_before_any_bd() -> None:
    """A level-22 stream needs ~830 MiB of context: under 192 MiB of stream memory it could never
    run, so it fails at once naming the highest level that fits, instead of NO_CTX_MEMORY at
    every retry; that level streams."""
    from warp.errors import ContextTooLarge
    from warp.zstream import highest_level

    async def main(rt: Runtime) -> None:
        with pytest.raises(ContextTooLarge) as refused:
            await rt.compress_stream(22).acompress(b"too wide " * 1000)
        level = highest_level(192 << 20)
        assert refused.value.status == abi.Status.NO_CTX_MEMORY and f"level {level} or lower" in str(refused.value)
        assert level is not None and rt.stream_memory.charged == 0
        async with rt.compress_stream(level) as stream:
            frame = await stream.acompress(b"fits " * 1000) + await stream.afinish()
        assert zstandard.ZstdDecompressor().decompressobj().decompress(frame) == b"fits " * 1000

    with Runtime(driver="cpu", heap_size=16 << 20, stream_memory=192 << 20) as rt:
        asyncio.run(main(rt))
