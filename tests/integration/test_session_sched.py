"""UADK's scheduling: under ``sched="session"`` a session gets one ctx when it is created (RR over
its op type's region) and every job of it goes there; the per-job least-loaded policy stays the
default. Completions are matched to requests by the tag in the SQE (the message pool)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.harness import DeviceProc
from warp import Runtime, abi
from warp.drv.zip import ZipDriver
from warp.sched import SessionRoundRobin


@dataclass
class Loaded:
    load: int


@pytest.fixture
def runtime(device: DeviceProc) -> Iterator[Runtime]:
    rt = Runtime(device.root, driver="zip", queues=3, heap_size=64 << 20, sched="session")
    yield rt
    rt.close()


def submitted_per_queue(rt: Runtime, direction: abi.QcType) -> list[int]:
    driver = rt.driver
    assert isinstance(driver, ZipDriver)
    return [q.submitted for q in driver.queues[direction]]


def test_regions_are_round_robin_per_op_type() -> None:
    sched = SessionRoundRobin()
    assert [sched.assign("comp", 3) for _ in range(4)] == [0, 1, 2, 0]
    assert [sched.assign("decomp", 2) for _ in range(3)] == [0, 1, 0]  # its own region and last index
    queues = [Loaded(0), Loaded(1), Loaded(2)]
    assert sched.pick(queues, 4) is queues[1] and sched.pick(queues, None) is queues[0]


def test_each_session_keeps_the_ctx_it_was_given(runtime: Runtime) -> None:
    sessions = [runtime.compressor(3) for _ in range(4)]
    assert [s.key for s in sessions] == [0, 1, 2, 0]
    assert len({id(s) for s in sessions}) == 4  # per-session scheduling: no shared session

    async def main() -> None:
        for count, session in zip((5, 3, 2, 1), sessions, strict=True):
            results = await asyncio.gather(*(session.acompress(b"x" * 5000) for _ in range(count)))
            for result in results:
                result.release()

    asyncio.run(main())
    assert submitted_per_queue(runtime, abi.QcType.COMPRESS) == [5 + 1, 3, 2]
    assert submitted_per_queue(runtime, abi.QcType.DECOMPRESS) == [0, 0, 0]


def test_stream_sessions_take_the_next_ctx_too(runtime: Runtime) -> None:
    async def main() -> None:
        for _ in range(3):
            async with runtime.compress_stream() as stream:
                await stream.acompress(b"y" * 10_000)
                await stream.afinish()

    asyncio.run(main())
    assert submitted_per_queue(runtime, abi.QcType.COMPRESS) == [2, 2, 2]  # a data BD and a FINISH BD each


def test_least_loaded_stays_the_default_and_shares_sessions(device: DeviceProc) -> None:
    with Runtime(device.root, driver="zip", queues=2, heap_size=32 << 20) as rt:
        assert rt.compressor(3) is rt.compressor(3)
        assert rt.compressor(3).key is None
    with pytest.raises(ValueError, match="sched"):
        Runtime(device.root, sched="fastest")


def test_completions_are_matched_by_their_tag(runtime: Runtime) -> None:
    frames = [runtime.compress(bytes([i]) * 3000) for i in range(40)]
    assert len(set(frames)) == 40
    driver = runtime.driver
    assert isinstance(driver, ZipDriver)
    queue = driver.queues[abi.QcType.COMPRESS][0]
    words = queue.handle.view.sq
    used = queue.submitted
    assert used >= 40 // 3  # this queue's share of the sessions
    tags = {int(words[slot * abi.SQ_WORDS + abi.W.TAG]) for slot in range(used)}
    assert tags == {1}  # one job in flight at a time: always the pool's first slot, whatever the SQ slot
    assert queue.pool.strays == 0 and queue.pool.used == 0


def test_sync_callers_on_threads_share_a_ctx_safely(device: DeviceProc) -> None:
    """UADK's sync mode holds the ctx's lock across send and receive; without it two threads on
    one queue race for its SQ and pool."""
    import threading

    with Runtime(device.root, driver="zip", queues=1, heap_size=64 << 20) as rt:
        errors: list[BaseException] = []

        def worker(seed: int) -> None:
            try:
                for i in range(150):
                    data = bytes([seed, i % 256]) * (500 + i)
                    assert rt.decompress(rt.compress(data, 1)) == data
            except BaseException as exc:  # noqa: BLE001 -- reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not errors, errors[:3]
        assert rt.fallback_jobs == 0
