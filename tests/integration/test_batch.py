"""The batch API (``compress_many`` / ``acompress_many`` and the decompress twins): N jobs written
to the SQ together and started with one doorbell; results in order; one bad input fails the batch
without leaking the others' buffers; a batch survives a device that dies under it."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest
import zstandard

from tests.harness import DeviceProc
from warp import JobFailed, Result, Runtime, RuntimeClosed
from warp.cdev import DevicePaths
from warp.dfx import Dfx, Queue

BODIES = [os.urandom(64) * (i % 7 + 1) + bytes([i]) * (300 + 13 * i) for i in range(100)]


@pytest.fixture
def runtime(device: DeviceProc) -> Iterator[Runtime]:
    rt = Runtime(device.root, driver="zip", heap_size=64 << 20, queues=1)
    yield rt
    rt.close()


def heap_idle(rt: Runtime) -> bool:
    return rt.heap.statistics().in_use_bytes == 0


def device_doorbells(device: DeviceProc) -> int:
    dfx = Dfx(DevicePaths(device.root, "warp_zip-0").dfx, 0, 0, create=False)
    try:
        return sum(int(dfx.queue(q)[Queue.DOORBELLS]) for q in range(dfx.queues))
    finally:
        dfx.close()


def frames_of(results: list[Result]) -> list[bytes]:
    frames = [bytes(r.view) for r in results]
    for r in results:
        r.release()
    return frames


def test_compress_many_is_one_doorbell(runtime: Runtime, device: DeviceProc) -> None:
    frames = frames_of(runtime.compressor(3).compress_many(BODIES))
    assert [zstandard.decompress(f) for f in frames] == BODIES
    stats = runtime.statistics().drivers[0]
    assert (stats.submitted, stats.doorbells) == (len(BODIES), 1)
    assert device_doorbells(device) == 1  # and one kick reached the device
    assert heap_idle(runtime)


def test_acompress_many_is_one_doorbell_and_round_trips(runtime: Runtime) -> None:
    async def main() -> list[bytes]:
        frames = frames_of(await runtime.compressor(5, checksum=True).acompress_many(BODIES))
        return frames_of(await runtime.decompressor(1 << 20).adecompress_many(frames))

    assert asyncio.run(main()) == BODIES
    stats = runtime.statistics().drivers[0]
    assert (stats.submitted, stats.doorbells) == (2 * len(BODIES), 2)  # one per batch
    assert heap_idle(runtime)


def test_a_bad_frame_fails_the_batch_and_frees_every_buffer(runtime: Runtime) -> None:
    good = zstandard.compress(b"fine " * 100)
    with pytest.raises(JobFailed):
        runtime.decompressor(1 << 20).decompress_many([good, b"\x28\xb5\x2f\xfd garbage", good])

    async def main() -> None:
        with pytest.raises(JobFailed):
            await runtime.decompressor(1 << 20).adecompress_many([good, b"not a frame", good])

    asyncio.run(main())
    assert heap_idle(runtime)


def test_a_batch_outlives_its_device(runtime: Runtime, device: DeviceProc) -> None:
    """The device is killed with the batch in its SQ: every job re-runs on the cpu."""
    device.proc.kill()
    device.proc.wait(10)
    frames = frames_of(runtime.compressor(3).compress_many(BODIES[:20]))
    assert [zstandard.decompress(f) for f in frames] == BODIES[:20]
    assert runtime.fallback_jobs == 20  # the batch was in the SQ of a dead device
    assert heap_idle(runtime)


def test_a_closed_runtime_refuses_a_batch_and_frees_its_inputs(runtime: Runtime) -> None:
    runtime.close()
    with pytest.raises(RuntimeClosed):
        runtime.compressor(3).compress_many(BODIES[:5])
    assert heap_idle(runtime)
