"""ZIP's 8 MiB BD limit: a larger SQE fails with BAD_LENGTH, and the library sends a larger job as
the stateful BDs of a stream on one queue — one job and one frame to its caller, with failover."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zstandard

from tests.harness import DeviceProc, start_device
from warp import JobFailed, Runtime, abi
from warp.device.launch import stop_process
from warp.drv.split import COMPRESS_PIECE, MAX_BD


@pytest.fixture
def runtime(device: DeviceProc) -> Iterator[Runtime]:
    rt = Runtime(device.root, driver="zip", heap_size=256 << 20, timeout=60)
    yield rt
    rt.close()


def big_input(corpus: dict[str, Path], size: int) -> bytes:
    text = corpus["dickens"].read_bytes()
    return (text * (size // len(text) + 1))[:size]


def device_bds(runtime: Runtime) -> int:
    stats = runtime.statistics().device
    assert stats is not None
    return stats.completed


def test_a_job_over_one_bd_is_one_frame_made_of_several_bds(runtime: Runtime, corpus: dict[str, Path]) -> None:
    data = big_input(corpus, 3 * MAX_BD + 12345)
    before = device_bds(runtime)
    frame = runtime.compress(data, 3, checksum=True)
    bds = device_bds(runtime) - before
    assert bds == -(-len(data) // COMPRESS_PIECE)  # every piece a BD on the device, none on the cpu
    obj = zstandard.ZstdDecompressor().decompressobj()
    assert obj.decompress(frame) == data and obj.eof and not obj.unused_data  # one frame
    assert runtime.fallback_jobs == 0

    before = device_bds(runtime)
    assert runtime.decompress(frame, max_output=len(data)) == data
    assert device_bds(runtime) - before >= len(data) // MAX_BD
    assert runtime.heap.statistics().in_use_bytes == 0


def test_async_split_jobs_run_beside_small_ones(runtime: Runtime, corpus: dict[str, Path]) -> None:
    large = big_input(corpus, 2 * MAX_BD)
    small = [os.urandom(64) * 64 for _ in range(20)]

    async def main() -> list[bytes]:
        session = runtime.compressor(1)
        results = await asyncio.gather(session.acompress(large), *(session.acompress(s) for s in small))
        out = [r.tobytes() for r in results]
        for r in results:
            r.release()
        return out

    frames = asyncio.run(main())
    assert [zstandard.decompress(f, max_output_size=len(large)) for f in frames] == [large, *small]
    assert runtime.fallback_jobs == 0
    assert runtime.heap.statistics().in_use_bytes == 0


def test_split_decompression_stops_at_the_output_limit(runtime: Runtime) -> None:
    """A frame that does not declare its size is a bomb candidate: the split stops at the limit."""
    zeros = bytes(3 * MAX_BD)
    unsized = zstandard.ZstdCompressor(write_content_size=False).compress(zeros)
    with pytest.raises(JobFailed) as failed:
        runtime.decompress(unsized, max_output=MAX_BD + 1)
    assert failed.value.status == abi.Status.DST_TOO_SMALL
    assert runtime.decompress(unsized, max_output=len(zeros)) == zeros
    assert runtime.heap.statistics().in_use_bytes == 0


def test_a_split_stopped_at_the_output_limit_gives_its_device_context_back(tmp_path: Path) -> None:
    """The split's stream context was left mid-frame in the device (its last BD said NO_SPACE): the
    driver wipes the ctx_buf's record as it frees it, so the engine lets that context go when the
    next stream needs the room (``--stream-memory`` fits one decompression context here)."""
    from warp.codec import lib

    dev = start_device(tmp_path / "root", "--stream-memory", str(int(lib.ZSTD_estimateDStreamSize(1 << 21)) * 3 // 2))
    unsized = zstandard.ZstdCompressor(write_content_size=False).compress(bytes(3 * MAX_BD))
    streamed = zstandard.ZstdCompressor().compressobj()  # no size known: the level's whole 2 MiB window
    small = streamed.compress(b"small " * 1000) + streamed.flush()

    async def next_stream(rt: Runtime) -> bytes:
        stream = rt.decompress_stream()
        out = b"".join([piece async for piece in stream.adecompress(small)])
        await stream.afinish()
        return out

    try:
        with Runtime(dev.root, driver="zip", heap_size=128 << 20, timeout=60) as rt:
            with pytest.raises(JobFailed) as failed:
                rt.decompress(unsized, max_output=MAX_BD + 1)
            assert failed.value.status == abi.Status.DST_TOO_SMALL
            with Runtime(dev.root, driver="zip", heap_size=16 << 20) as other:  # another queue, another ctx_buf
                assert asyncio.run(next_stream(other)) == b"small " * 1000
    finally:
        stop_process(dev.proc)


def test_a_split_job_whose_stream_context_does_not_fit_reruns_on_the_cpu(tmp_path: Path,
                                                                       corpus: dict[str, Path]) -> None:
    """A job over one BD runs as a stream, so its context is charged like any stream's: under a
    --stream-memory smaller than one level-3 context the device refuses it NO_CTX_MEMORY, and the
    job re-runs on the cpu, which takes it whole with no stream context — one frame, nothing lost,
    every buffer and the ctx_buf back in the heap."""
    dev = start_device(tmp_path / "root", "--stream-memory", str(1 << 20))
    data = big_input(corpus, MAX_BD + 1)
    try:
        with Runtime(dev.root, driver="zip", heap_size=128 << 20, timeout=60) as rt:
            frame = rt.compress(data)
            assert rt.fallback_jobs == 1 and rt.driver.name == "zip"
            assert zstandard.ZstdDecompressor().decompress(frame, max_output_size=len(data)) == data
            assert rt.heap.statistics().in_use_bytes == 0
    finally:
        stop_process(dev.proc)


def test_a_truncated_large_frame_is_corrupt_input(runtime: Runtime) -> None:
    data = bytes(np.random.default_rng(3).integers(0, 8, 2 * MAX_BD, np.uint8))
    frame = zstandard.ZstdCompressor(write_content_size=False).compress(data)
    with pytest.raises(JobFailed) as failed:
        runtime.decompress(frame[: len(frame) // 2], max_output=len(data))
    assert failed.value.status == abi.Status.CORRUPT_INPUT


def test_a_device_lost_between_bds_reruns_the_whole_job_on_the_cpu(device: DeviceProc, runtime: Runtime,
                                                                   corpus: dict[str, Path]) -> None:
    data = big_input(corpus, 4 * MAX_BD)

    async def main() -> bytes:
        task = asyncio.ensure_future(runtime.compressor(9).acompress(data))
        await asyncio.sleep(0.3)  # a few BDs in
        os.kill(device.pid, signal.SIGKILL)
        with await task as result:
            return result.tobytes()

    frame = asyncio.run(main())
    device.proc.wait(10)
    assert zstandard.decompress(frame, max_output_size=len(data)) == data
    assert runtime.fallback_jobs == 1
    assert runtime.heap.statistics().in_use_bytes == 0
