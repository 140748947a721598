"""The library keeps every job through device trouble: hardware errors and a stopped (isolated)
queue re-run on the cpu driver with correct results, and no job waits for its timeout; a hung
engine costs one timeout, after which the queues are reset and every job re-runs on the cpu."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zstandard

from tests.harness import DeviceProc, device_cli, process_stopped
from tests.integration.fidelity import attr, compress_all, dfx, wait_for
from warp import JobTimeout, Result, Runtime, RuntimeClosed
from warp.dfx import Dev
from warp.drv.zip import RESET_GRACE
from warp.failover import PROBE_INTERVAL


@pytest.fixture
def runtime(device: DeviceProc) -> Iterator[Runtime]:
    rt = Runtime(device.root, driver="zip", heap_size=64 << 20, timeout=20)
    yield rt
    rt.close()


def resets(root: Path) -> int:
    counters = dfx(root)
    try:
        return int(counters.dev[Dev.RESETS])
    finally:
        counters.close()


def resets_reach(root: Path, n: int) -> Callable[[], bool]:
    return lambda: resets(root) == n


def on_fresh_queues(rt: Runtime, old: set[int]) -> Callable[[], bool]:
    """The runtime is on the device again, on queues it did not have before."""
    return lambda: rt.driver.name == "zip" and sqns(rt).isdisjoint(old)


def sqns(rt: Runtime) -> set[int]:
    stats = rt.statistics().device
    assert stats is not None
    return {q.sqn for q in stats.per_queue}


def test_hardware_errors_are_rerun_on_the_cpu_and_the_device_is_used_again(device: DeviceProc,
                                                                           runtime: Runtime) -> None:
    """Each hardware error resets the controller, which stops every queue for good: the failed
    job and those in flight re-run on the cpu, and the runtime re-creates its queues (as UADK
    users after ``-WD_HW_EACCESS``), so later jobs run on the device again — three times over."""
    bodies = [os.urandom(100) * (i + 1) for i in range(20)]
    for n in (1, 2, 3):
        before = sqns(runtime)
        assert device_cli(device.root, "inject", "hw-error").returncode == 0
        frames = compress_all(runtime, bodies)
        assert [zstandard.decompress(f) for f in frames] == bodies
        assert wait_for(resets_reach(device.root, n))
        assert runtime.fallback_jobs >= n  # the failed ones at least, each re-run once
        assert wait_for(on_fresh_queues(runtime, before), 10), \
            "fresh queues on the device"
    assert compress_all(runtime, bodies[:3])
    stats = runtime.statistics().device
    assert stats is not None and stats.alive and stats.completed >= 3
    assert attr(device.root, "isolate") == "0"


def test_a_reset_under_load_reruns_the_jobs_in_flight_and_later_jobs_use_fresh_queues(
        device: DeviceProc, runtime: Runtime) -> None:
    """An operator's reset while jobs wait in the SQs (a hung engine, which the reset ends): the
    jobs the reset stopped re-run on the cpu, every result is right, no job waits for its
    timeout, and the next jobs run on new queues on the device — no restart of anything."""
    assert compress_all(runtime, [b"warm" * 100])
    before = sqns(runtime)
    assert device_cli(device.root, "inject", "hang").returncode == 0
    bodies = [os.urandom(1024) * (i + 1) for i in range(24)]

    async def main() -> list[bytes]:
        comp = runtime.compressor(3)
        pending = [asyncio.ensure_future(comp.acompress(b)) for b in bodies]
        await asyncio.sleep(0.2)
        cli = await asyncio.to_thread(device_cli, device.root, "reset")
        assert cli.returncode == 0, cli.stderr
        results = await asyncio.gather(*pending)
        out = [bytes(r.view) for r in results]
        for r in results:
            r.release()
        return out

    started = time.monotonic()
    frames = asyncio.run(main())
    assert [zstandard.decompress(f) for f in frames] == bodies
    assert time.monotonic() - started < runtime.timeout / 2, "no job waited for its timeout"
    assert runtime.fallback_jobs == len(bodies), "every job the reset stopped re-ran on the cpu"
    assert wait_for(on_fresh_queues(runtime, before), 10)
    done = compress_all(runtime, bodies[:4])
    assert [zstandard.decompress(f) for f in done] == bodies[:4]
    stats = runtime.statistics().device
    assert stats is not None and stats.alive and stats.completed >= 4 and sqns(runtime).isdisjoint(before)


def test_sync_callers_re_create_their_queues_after_a_reset(device: DeviceProc, runtime: Runtime) -> None:
    """Without an event loop: the first send after a reset finds the TX flag (UADK's "hw error
    happened before qm send", ``-WD_HW_EACCESS``) and the job re-runs on the cpu; a later call
    probes in line and opens fresh queues."""
    data = os.urandom(100) * 50
    assert zstandard.decompress(runtime.compress(data)) == data
    before = sqns(runtime)
    assert device_cli(device.root, "reset").returncode == 0
    assert zstandard.decompress(runtime.compress(data)) == data
    assert runtime.fallback_jobs == 1
    fresh = on_fresh_queues(runtime, before)
    deadline = time.monotonic() + 10
    while not fresh() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fresh()
    completed = runtime.statistics().drivers[0].completed
    assert zstandard.decompress(runtime.compress(data)) == data
    assert runtime.statistics().drivers[0].completed == completed + 1, "the job ran on the new queues"


def test_isolation_fails_over_at_once(device: DeviceProc, runtime: Runtime) -> None:
    """A reset that fails isolates the device: the jobs it stopped re-run on the cpu at once (no
    timeout), and the runtime stays on the cpu, as discovery skips an isolated device."""
    assert device_cli(device.root, "inject", "reset-fail").returncode == 0
    assert device_cli(device.root, "inject", "hw-error").returncode == 0
    started = time.monotonic()
    bodies = [os.urandom(50) * (i + 2) for i in range(30)]
    frames = compress_all(runtime, bodies)  # one hits the error; its reset fails; the device isolates
    assert [zstandard.decompress(f) for f in frames] == bodies
    assert wait_for(lambda: attr(device.root, "isolate") == "1")
    time.sleep(PROBE_INTERVAL)  # a probe is due: it finds no usable device
    again = compress_all(runtime, bodies[:5])  # now on the cpu driver, without waiting for timeouts
    assert [zstandard.decompress(f) for f in again] == bodies[:5]
    assert runtime.driver.name == "cpu"
    assert time.monotonic() - started < 10, "a stopped queue must fail over, not time out"


def test_reset_cycles_give_the_held_buffers_back(device: DeviceProc, runtime: Runtime) -> None:
    """Issue 15, item 6: destinations a stopped queue might still write are held back — until
    the device answers the old queues' PUT_Q (when the runtime moves onto fresh ones), not until
    close. Three reset cycles leave nothing held."""
    bodies = [os.urandom(50) * (i + 2) for i in range(30)]
    for n in (1, 2, 3):
        assert device_cli(device.root, "inject", "hw-error").returncode == 0
        frames = compress_all(runtime, bodies)
        assert [zstandard.decompress(f) for f in frames] == bodies
        assert wait_for(resets_reach(device.root, n))
        assert wait_for(lambda: runtime.driver.name == "zip", timeout=10)
    assert runtime.fallback_jobs > 0
    assert wait_for(lambda: heap_idle(runtime)), runtime.heap.statistics()


def heap_idle(rt: Runtime) -> bool:
    return rt.heap.statistics().in_use_bytes == 0


def test_a_hung_engine_costs_one_timeout_then_every_job_reruns_on_the_cpu(device: DeviceProc) -> None:
    """Job timeout → PUT_Q on every queue (a hung engine cannot drain: the PUT_Qs answer only
    after the failed drain's controller reset, past RESET_GRACE) → the jobs, the timed-out one
    too, re-run on the cpu at once; once the PUT_Qs answered no buffer is left behind."""
    rt = Runtime(device.root, driver="zip", heap_size=64 << 20, timeout=0.5)
    try:
        assert device_cli(device.root, "inject", "hang").returncode == 0  # until reset
        bodies = [os.urandom(64) * (i + 1) for i in range(24)]

        async def main() -> tuple[list[bytes], float]:
            started = time.monotonic()
            comp = rt.compressor(3)
            results = await asyncio.gather(*(comp.acompress(b) for b in bodies))
            took = time.monotonic() - started
            out = [bytes(r.view) for r in results]
            for r in results:
                r.release()
            deadline = time.monotonic() + 10  # the loop lives on, as a server's: the PUT_Qs answer
            while not heap_idle(rt) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            return out, took

        frames, took = asyncio.run(main())
        assert [zstandard.decompress(f) for f in frames] == bodies
        assert took < 5, "every job waits for one timeout at most"
        assert rt.queue_resets == 1
        assert rt.fallback_jobs == len(bodies)
        assert heap_idle(rt), "the answered PUT_Qs let the destinations go"
        assert wait_for(lambda: attr(device.root, "available_instances") == "64"), "the reset queues were put"
        # The device comes back from its hang: a probe (in the background from a loop, at most
        # once per PROBE_INTERVAL) opens fresh queues on it.
        assert device_cli(device.root, "reset").returncode == 0
        assert wait_for(lambda: rt.driver.name == "zip", timeout=10)
        assert compress_all(rt, bodies[:3])
        assert rt.statistics().drivers[0].completed >= 3
    finally:
        rt.close()


def test_a_stopped_device_costs_one_timeout_and_never_stalls_the_loop(device: DeviceProc) -> None:
    """``kill -STOP`` on the device: it accepts connections and answers nothing. Jobs cost one
    timeout plus RESET_GRACE (then re-run on the cpu), the loop never waits on the device — not
    for the reset's PUT_Qs, not for the probes — and once the device runs again and answers
    the PUT_Qs, the destinations it might have written come back to the pool."""
    rt = Runtime(device.root, driver="zip", heap_size=64 << 20, timeout=0.5)
    bodies = [os.urandom(64) * (i + 1) for i in range(8)]

    async def main() -> tuple[list[bytes], float, float]:
        longest = 0.0

        async def ticker() -> None:  # the longest the loop went without running us
            nonlocal longest
            while True:
                before = time.monotonic()
                await asyncio.sleep(0.01)
                longest = max(longest, time.monotonic() - before)

        ticking = asyncio.create_task(ticker())
        comp = rt.compressor(3)
        os.kill(device.pid, signal.SIGSTOP)
        assert wait_for(lambda: process_stopped(device.pid)), "the device did not stop"
        try:
            started = time.monotonic()
            results = await asyncio.gather(*(comp.acompress(b) for b in bodies))
            elapsed = time.monotonic() - started
            frames = [bytes(r.view) for r in results]
            for r in results:
                r.release()
            for _ in range(10):  # probes are due meanwhile: each must go to the background
                assert rt.driver.name == "cpu"
                await asyncio.sleep(0.15)
        finally:
            os.kill(device.pid, signal.SIGCONT)
        for _ in range(200):  # the queued PUT_Qs are answered now: what the device held comes back
            if heap_idle(rt):
                break
            await asyncio.sleep(0.05)
        ticking.cancel()
        return frames, elapsed, longest

    try:
        frames, elapsed, longest = asyncio.run(main())
        assert [zstandard.decompress(f) for f in frames] == bodies
        assert elapsed < 0.5 + RESET_GRACE + 1.0, elapsed
        assert longest < 0.5, f"the loop stalled for {longest:.2f} s"
        assert heap_idle(rt), rt.heap.statistics()
        assert rt.queue_resets == 1
    finally:
        rt.close()


def test_a_sync_caller_gets_the_same_reset(device: DeviceProc) -> None:
    rt = Runtime(device.root, driver="zip", heap_size=64 << 20, timeout=0.3)
    try:
        assert device_cli(device.root, "inject", "hang").returncode == 0
        body = os.urandom(3000) * 3
        with rt.compressor(3).compress(body) as result:
            assert zstandard.decompress(bytes(result.view)) == body
        assert (rt.queue_resets, rt.fallback_jobs) == (1, 1)
        assert heap_idle(rt)
    finally:
        rt.close()


def test_a_job_that_outlives_the_timeout_on_the_cpu_fails_and_gives_its_buffers_back(tmp_path: Path) -> None:
    rt = Runtime(tmp_path, driver="cpu", heap_size=64 << 20, timeout=0.001)
    try:
        body = os.urandom(1 << 16) * 16  # 1 MiB at level 19: far beyond a millisecond

        async def main() -> bool:
            with pytest.raises(JobTimeout):
                await rt.compressor(19).acompress(body)
            for _ in range(500):  # the cpu thread finishes the job on; then its buffers come back
                if heap_idle(rt):
                    return True
                await asyncio.sleep(0.01)
            return False

        assert asyncio.run(main()), "the buffers come back once the cpu job ends"
        assert rt.queue_resets == 0
    finally:
        rt.close()


def test_closing_the_runtime_ends_waiting_jobs_with_runtime_closed(device: DeviceProc) -> None:
    """A service that stops while jobs wait on a hung device closes its runtime: the waiting jobs
    and any new one end with RuntimeClosed (a clean "retry elsewhere"), not with the cpu pool's
    "cannot schedule new futures after shutdown"."""
    rt = Runtime(device.root, driver="zip", heap_size=64 << 20, timeout=30)
    try:
        assert device_cli(device.root, "inject", "hang").returncode == 0

        async def main() -> list[Result | BaseException]:
            comp = rt.compressor(3)
            waiting = [asyncio.create_task(comp.acompress(os.urandom(500) * 4)) for _ in range(6)]
            await asyncio.sleep(0.3)  # every job is in the hung SQ now
            rt.close()
            outcomes = await asyncio.gather(*waiting, return_exceptions=True)
            with pytest.raises(RuntimeClosed):
                await comp.acompress(b"after the close")
            return outcomes

        outcomes = asyncio.run(main())
        assert all(isinstance(o, RuntimeClosed) for o in outcomes), outcomes
    finally:
        rt.close()
