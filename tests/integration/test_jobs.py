"""Jobs through a real device process: correctness, batching, IOPFs, bad SQEs, device death."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from tests.harness import DeviceProc
from tests.integration.fidelity import compress_all
from warp import JobFailed, Runtime, RuntimeClosed, abi
from warp.cdev import DevicePaths
from warp.dfx import Dfx, Queue
from warp.drv.base import Job
from warp.iommu.fault import FaultCounter


@pytest.fixture
def runtime(device: DeviceProc) -> Iterator[Runtime]:
    rt = Runtime(device.root, driver="zip", heap_size=256 << 20)
    yield rt
    rt.close()


def dfx_of(device: DeviceProc) -> Dfx:
    return Dfx(DevicePaths(device.root, "warp_zip-0").dfx, 0, 0, create=False)


def unzstd(data: bytes | memoryview) -> bytes:
    return zstandard.ZstdDecompressor().decompress(bytes(data))


@pytest.mark.parametrize("level", [-7, 1, 3, 19])
def test_sync_roundtrip_on_corpus(runtime: Runtime, corpus: dict[str, Path], level: int) -> None:
    data = corpus["xml"].read_bytes()[: 1 << 20]
    with runtime.compressor(level).compress(data) as result:
        frame = bytes(result.view)
    assert runtime.driver.name == "zip"
    assert zstandard.get_frame_parameters(frame).content_size == len(data)
    assert unzstd(frame) == data


def test_checksum_flag(runtime: Runtime) -> None:
    with runtime.compressor(3, checksum=True).compress(b"hello" * 100) as result:
        assert zstandard.get_frame_parameters(bytes(result.view)).has_checksum


def test_empty_and_one_byte(runtime: Runtime) -> None:
    for data in (b"", b"x"):
        with runtime.compressor().compress(data) as result:
            assert unzstd(result.view) == data


@pytest.mark.parametrize(("doorbell_batch", "most_doorbells"), [(1024, 9), (4, 50)])
def test_async_jobs_in_one_tick_share_doorbells(device: DeviceProc, doorbell_batch: int, most_doorbells: int) -> None:
    """One doorbell per tick, or per ``doorbell_batch`` jobs when the tick brings more."""
    runtime = Runtime(device.root, driver="zip", heap_size=64 << 20, doorbell_batch=doorbell_batch)
    bodies = [os.urandom(100) + bytes([i]) * (1000 + i * 37) for i in range(200)]

    frames = compress_all(runtime, bodies)
    stats = runtime.statistics().drivers[0]
    runtime.close()
    assert [unzstd(f) for f in frames] == bodies
    assert stats.submitted == 200 and stats.completed == 200
    assert stats.doorbells <= most_doorbells, f"200 jobs of one tick took {stats.doorbells} doorbells"
    dfx = dfx_of(device)
    batches = sum(int(dfx.queue(q)[Queue.BATCHES]) for q in range(dfx.queues))
    dfx.close()
    assert batches < 200  # the engine fetched them in batches, not one by one


def test_decompress_and_its_limits(runtime: Runtime) -> None:
    data = b"abc" * 10000
    frame = zstandard.ZstdCompressor().compress(data)
    with runtime.decompressor(1 << 20).decompress(frame) as result:
        assert bytes(result.view) == data
    with pytest.raises(JobFailed) as exc:
        runtime.decompressor(1000).decompress(frame)  # declared size over the limit
    assert exc.value.status == abi.Status.DST_TOO_SMALL
    unknown = zstandard.ZstdCompressor(write_content_size=False).compress(data)
    with pytest.raises(JobFailed) as exc:
        runtime.decompressor(1000).decompress(unknown)  # the engine stops at the cap
    assert exc.value.status == abi.Status.DST_TOO_SMALL
    with pytest.raises(JobFailed) as exc:
        runtime.decompressor(1 << 20).decompress(b"not a zstd frame at all")
    assert exc.value.status == abi.Status.CORRUPT_INPUT
    assert runtime.heap.statistics().in_use_bytes == 0  # every failure path gave its buffers back


def test_unprefaulted_buffers_fault_then_the_warm_pool_does_not(device: DeviceProc) -> None:
    rt = Runtime(device.root, driver="zip", heap_size=64 << 20, prefault=False)
    try:
        comp = rt.compressor(1)
        data = b"0123456789" * 20000
        with comp.compress(data) as r:
            assert unzstd(r.view) == data
        dfx = dfx_of(device)
        assert int(dfx.faults[FaultCounter.PAGES_OK]) > 0, "untouched destination pages must fault"
        with comp.compress(data) as r:  # source and destination swap pool blocks once
            pass
        cold = int(dfx.faults[FaultCounter.PAGES_OK])
        for _ in range(20):
            with comp.compress(data) as r:
                pass
        assert int(dfx.faults[FaultCounter.PAGES_OK]) == cold, "a warm pool must not fault"
        # Memory pressure takes the pages away: the next job faults them back in.
        rt.space.reclaim(0, rt.space.size)
        with comp.compress(data) as r:
            assert unzstd(r.view) == data
        assert int(dfx.faults[FaultCounter.PAGES_OK]) > cold
        assert int(dfx.faults[FaultCounter.REQUESTS]) > 0 and int(dfx.faults[FaultCounter.SERVICE_NS]) > 0
        dfx.close()
    finally:
        rt.close()


def raw_job(runtime: Runtime, **words: int) -> Job:
    """A job whose SQE is then corrupted on purpose (forged address, bad opcode, bad level)."""
    src = runtime.load(b"payload" * 100)
    dst = runtime.alloc(4096)
    job = Job(direction=abi.QcType.COMPRESS, src=src, length=700, dst=dst, level=words.pop("level", 3))
    for name, value in words.items():
        (job.src if name == "src" else job.dst).address = value
    return job


@pytest.mark.parametrize(("fields", "status"), [
    ({"src": 0x1000}, abi.Status.ADDR_FAULT),  # below the heap: unmapped
    ({"dst": 0x7FFF_FFFF_0000}, abi.Status.ADDR_FAULT),  # far above it
    ({"level": 23}, abi.Status.BAD_LEVEL),
])
def test_bad_sqes_fail_with_a_status_and_the_device_lives_on(runtime: Runtime, device: DeviceProc,
                                                             fields: dict[str, int], status: abi.Status) -> None:
    job = raw_job(runtime, **fields)
    assert runtime.zip is not None
    runtime.zip.run([job], timeout=10)
    assert job.status == status
    job.abandon()  # hands both buffers back now that the job finished
    with runtime.compressor().compress(b"still alive") as r:
        assert unzstd(r.view) == b"still alive"
    if status == abi.Status.ADDR_FAULT:
        dfx = dfx_of(device)
        assert int(dfx.faults[FaultCounter.PAGES_INVALID]) > 0
        dfx.close()


def test_write_to_read_only_page_is_invalid(runtime: Runtime) -> None:
    src = runtime.load(b"x" * 5000)
    dst = runtime.alloc(8192)
    runtime.space.protect(dst.offset, dst.capacity)
    job = Job(direction=abi.QcType.COMPRESS, src=src, length=5000, dst=dst)
    assert runtime.zip is not None
    runtime.zip.run([job], timeout=10)
    assert job.status == abi.Status.ADDR_FAULT


def test_device_death_falls_back_to_cpu_without_losing_jobs(device: DeviceProc) -> None:
    rt = Runtime(device.root, driver="auto", heap_size=64 << 20)
    bodies = [os.urandom(64) * (i + 1) * 50 for i in range(50)]

    async def main() -> list[bytes]:
        comp = rt.compressor(19)  # slow enough that jobs are in flight when the device dies
        tasks = [asyncio.ensure_future(comp.acompress(b)) for b in bodies]
        await asyncio.sleep(0)
        os.kill(device.pid, signal.SIGKILL)
        results = await asyncio.gather(*tasks)
        out = [bytes(r.view) for r in results]
        for r in results:
            r.release()
        return out

    try:
        frames = asyncio.run(main())
        assert [unzstd(f) for f in frames] == bodies
        assert rt.driver.name == "cpu"
        assert rt.fallback_jobs > 0, "the kill must have caught jobs in flight"
        with rt.compressor().compress(b"after") as r:
            assert unzstd(r.view) == b"after"
    finally:
        rt.close()
        device.proc.wait(5)


def test_cancelled_jobs_return_their_buffers(runtime: Runtime) -> None:
    """Jobs cancelled while the engine still works on them: every caller gets CancelledError at
    once, and their buffers come back when the engine is done with them (not before: the device
    may still write into them)."""
    async def main() -> None:
        comp = runtime.compressor(19)  # 200 kB of noise at level 19: tens of ms per job on an engine
        tasks = [asyncio.ensure_future(comp.acompress(os.urandom(200_000))) for _ in range(8)]
        deadline = time.monotonic() + 10
        while runtime.statistics().drivers[0].submitted < len(tasks):
            assert time.monotonic() < deadline, "the jobs never reached the device"
            await asyncio.sleep(0.001)
        # in flight now: on the device, not completed, holding heap; cancelled in this same tick
        assert runtime.statistics().drivers[0].completed < len(tasks)
        assert runtime.heap.statistics().in_use_bytes > 0
        for t in tasks:
            t.cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(o, asyncio.CancelledError) for o in outcomes), outcomes
        deadline = time.monotonic() + 10
        while runtime.heap.statistics().in_use_bytes:  # the engine finishes them; the driver frees then
            assert time.monotonic() < deadline, "cancelled jobs kept their buffers"
            await asyncio.sleep(0.05)

    asyncio.run(main())
    assert runtime.heap.statistics().in_use_bytes == 0


def test_submit_hands_each_outcome_to_its_callback_once(runtime: Runtime) -> None:
    """The task-free API the data path uses: results, a refused job (a frame declaring more than
    the limit) and an abandoned job, each reported once and every buffer back in the pool."""
    async def main() -> list[object]:
        outcomes: list[object] = []
        comp = runtime.compressor(3)
        bodies = [os.urandom(100) * (i + 1) for i in range(16)]
        for body in bodies:
            comp.submit_buffer(runtime.load(body), len(body), outcomes.append)
        abandoned = comp.submit_buffer(runtime.load(os.urandom(100_000)), 100_000, outcomes.append)
        abandoned.abandon()
        bomb = zstandard.ZstdCompressor().compress(b"\0" * 100_000)
        with pytest.raises(JobFailed):
            runtime.decompressor(1000).submit_buffer(runtime.load(bomb), len(bomb), outcomes.append)
        for _ in range(200):
            if len(outcomes) == len(bodies):
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # an abandoned job's callback would have come by now
        assert [unzstd(r.view) for r in outcomes if not isinstance(r, BaseException)] == bodies  # type: ignore[attr-defined]
        for r in outcomes:
            r.release()  # type: ignore[attr-defined]
        return outcomes

    assert len(asyncio.run(main())) == 16
    assert runtime.heap.statistics().in_use_bytes == 0


def test_submit_on_a_closed_runtime_refuses_and_frees_the_input(device: DeviceProc) -> None:
    rt = Runtime(device.root, driver="zip", heap_size=64 << 20)
    src = rt.load(b"late" * 100)
    rt.close()
    with pytest.raises(RuntimeClosed):
        rt.compressor().submit_buffer(src, 400, lambda outcome: None)
    assert rt.heap.statistics().in_use_bytes == 0


def test_one_runtime_serves_one_event_loop_after_another_and_sync_calls_between(runtime: Runtime) -> None:
    """Issue 15, item 10: queues bind to the loop of their first job; when that loop has ended
    (``asyncio.run`` returned), the next loop — or a synchronous caller — takes them over."""
    bodies = [os.urandom(80) * (i + 1) for i in range(12)]
    for _ in range(3):
        assert [unzstd(f) for f in compress_all(runtime, bodies)] == bodies
        with runtime.compressor().compress(bodies[3]) as result:
            assert unzstd(result.view) == bodies[3]
    assert runtime.driver.name == "zip"
    assert runtime.statistics().drivers[0].completed >= 3 * (len(bodies) + 1)
    assert runtime.heap.statistics().in_use_bytes == 0


def test_runtimes_opened_back_to_back_in_one_process(device: DeviceProc) -> None:
    """A new heap must never inherit the mapping of an old one whose queue file is still closing."""
    data = b"back to back " * 5000
    for _ in range(10):
        rt = Runtime(device.root, driver="zip", heap_size=16 << 20)
        try:
            with rt.compressor().compress(data) as result:
                assert unzstd(result.view) == data
        finally:
            rt.close()


def test_no_doorbell_is_lost_while_engines_go_idle(device: DeviceProc) -> None:
    """Jobs arrive in small, irregular bursts, so doorbells keep landing while an engine is on its
    way to sleep: with kick suppression a lost doorbell would leave its job in the SQ until the
    timeout reset the queues, which ``queue_resets`` would show."""
    runtime = Runtime(device.root, driver="zip", heap_size=64 << 20, timeout=5)
    rng = random.Random(7)
    bodies = [os.urandom(rng.randrange(16, 3000)) * rng.randrange(1, 4) for _ in range(1500)]

    async def main() -> list[bytes]:
        comp = runtime.compressor(1)
        frames: list[bytes] = []
        i = 0
        while i < len(bodies):
            burst = bodies[i:i + rng.randrange(1, 6)]
            i += len(burst)
            for result in await asyncio.gather(*(comp.acompress(b) for b in burst)):
                frames.append(bytes(result.view))
                result.release()
            if rng.random() < 0.3:
                await asyncio.sleep(rng.random() / 2000)  # let the engine fall idle now and then
        return frames

    try:
        sync = runtime.compressor(1)
        for body in bodies[:300]:  # one at a time: every doorbell meets an idle or idling engine
            with sync.compress(body) as result:
                assert unzstd(result.view) == body
        frames = asyncio.run(main())  # (a queue once driven by a loop refuses sync callers)
        assert [unzstd(f) for f in frames] == bodies
        assert runtime.queue_resets == 0 and runtime.fallback_jobs == 0
        assert runtime.statistics().drivers[0].completed == len(bodies) + 300
    finally:
        runtime.close()
