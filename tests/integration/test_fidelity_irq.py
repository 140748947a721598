"""Interrupts (reference §2.5, §2.6, §7 items 6 and 17): the CQ doorbell's priority bit arms the
queue's interrupt, polling mode raises none, and moderation coalesces by count and by time."""

from __future__ import annotations

import select
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import DeviceProc, start_device
from tests.integration.fidelity import RawQueue, dfx, queue_and_counters, wait_for
from warp import abi, codec
from warp.device.launch import stop_process
from warp.dfx import Queue
from warp.sva import AddressSpace

MIB = 1 << 20


@pytest.fixture
def space() -> Iterator[AddressSpace]:
    s = AddressSpace(8 * MIB)
    s.write(0, b"interrupt moderation " * 200)
    s.prefault(MIB, 4 * MIB)
    yield s
    s.close()


def submit(q: RawQueue, count: int, level: int = 1) -> None:
    for _ in range(count):
        q.write(0, 4000, MIB, 8192, level=level)
    q.doorbell()


def test_polling_mode_raises_no_interrupt(device: DeviceProc, space: AddressSpace) -> None:
    """CQ doorbell priority 0 (UADK epoll_en off): jobs complete and are found by polling the CQ,
    and the interrupt count stays 0; priority 1 arms it again."""
    q = RawQueue(device.root, space)
    counters = dfx(device.root)
    row = counters.queue(q.sqn)
    try:
        q.arm(False)
        for _ in range(5):
            submit(q, 10)
            assert len(q.wait(10)) == 10
        assert int(row[Queue.COMPLETED_OK]) == 50
        assert int(row[Queue.INTERRUPTS]) == 0
        assert q.irq_pending() == 0
        q.arm(True)
        submit(q, 10)
        assert len(q.wait(10)) == 10
        assert wait_for(lambda: int(row[Queue.INTERRUPTS]) > 0)
        assert q.irq_pending() > 0
    finally:
        counters.close()
        q.close()


@pytest.mark.parametrize(("flags", "doorbells", "interrupts"), [
    (("--irq-coalesce", "4"), [32], 8),  # one interrupt per 4 CQEs
    (("--irq-coalesce", "4"), [30], 8),  # 7 by count + the rest at the end of the batch
    (("--irq-coalesce", "1"), [10], 10),  # no moderation
    (("--irq-coalesce", "1000"), [32], 1),  # one per batch
    (("--irq-coalesce", "1000"), [64], 2),  # two batches of 32
    (("--irq-coalesce", "1000", "--batch", "8"), [32], 4),
], ids=["count4-32", "count4-30", "count1", "batch-end", "two-batches", "batch8"])
def test_moderation_by_count(tmp_path: Path, space: AddressSpace, flags: tuple[str, ...], doorbells: list[int],
                             interrupts: int) -> None:
    dev = start_device(tmp_path / "root", *flags)
    with queue_and_counters(dev.root, space) as (q, counters):
        q.arm(True)
        for n in doorbells:
            submit(q, n)
            assert len(q.wait(n)) == n
        assert int(counters.queue(q.sqn)[Queue.INTERRUPTS]) == interrupts
        stop_process(dev.proc)


def wait_irq(q: RawQueue, timeout: float) -> float | None:
    """Sleep on the interrupt as poll() does; the time it came, or None."""
    ready, _, _ = select.select([q.handle.irq_fd], [], [], timeout)
    return time.monotonic() if ready else None


def first_completion(q: RawQueue, timeout: float = 10) -> float:
    """Busy-poll the CQ without consuming: when the first CQE became valid."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if q.handle.view.cq[abi.CQE_HALF_W7] & 1 == q.cq.phase:
            return time.monotonic()
    raise AssertionError("no completion")


def test_moderation_by_time_coalesces_across_doorbells(tmp_path: Path, space: AddressSpace) -> None:
    """--irq-delay-us: the first unsignalled completion arms a timer; completions before it fires
    share its interrupt, which comes no later than the delay."""
    dev = start_device(tmp_path / "root", "--irq-coalesce", "1000", "--irq-delay-us", "200000")
    with queue_and_counters(dev.root, space) as (q, counters):
        q.arm(True)
        submit(q, 1)
        done = first_completion(q)
        for _ in range(2):
            time.sleep(0.02)
            submit(q, 1)
        came = wait_irq(q, 2)
        assert came is not None, "time moderation must raise the interrupt"
        assert 0.12 <= came - done <= 0.2 + 0.15, f"interrupt {came - done:.3f} s after the first completion"
        assert len(q.wait(3)) == 3
        time.sleep(0.3)
        assert int(counters.queue(q.sqn)[Queue.INTERRUPTS]) == 1, "three completions, one interrupt"
        stop_process(dev.proc)


def test_moderation_by_time_fires_while_the_engine_is_busy(tmp_path: Path, space: AddressSpace,
                                                            corpus: dict[str, Path]) -> None:
    """A fast job then a slow one in one batch: the fast one's interrupt comes after the delay,
    not when the batch ends (the timer does not wait for the engine)."""
    data = corpus["dickens"].read_bytes()[:MIB]
    space.write(4 * MIB, data)
    space.prefault(5 * MIB, 2 * MIB)
    dev = start_device(tmp_path / "root", "--irq-coalesce", "1000", "--irq-delay-us", "30000")
    q = RawQueue(dev.root, space)
    try:
        q.arm(True)
        q.write(0, 4000, MIB, 8192, level=1)
        q.write(4 * MIB, MIB, 5 * MIB, codec.compress_bound(MIB), level=19)
        q.doorbell()
        done = first_completion(q)
        came = wait_irq(q, 2)
        assert came is not None
        assert came - done < 0.03 + 0.1, f"interrupt {came - done:.3f} s after the completion"
        slow = q.wait(2)
        assert [c.status for c in slow] == [abi.Status.OK, abi.Status.OK]
        assert time.monotonic() - done > 0.1, "the slow job should have outlasted the delay"
    finally:
        q.close()
        stop_process(dev.proc)


def test_moderation_by_count_and_time_together(tmp_path: Path, space: AddressSpace) -> None:
    dev = start_device(tmp_path / "root", "--irq-coalesce", "2", "--irq-delay-us", "100000")
    q = RawQueue(dev.root, space)
    counters = dfx(dev.root)
    row = counters.queue(q.sqn)
    try:
        q.arm(True)
        submit(q, 3)
        assert len(q.wait(3)) == 3
        assert int(row[Queue.INTERRUPTS]) >= 1, "two CQEs: one interrupt by count, at once"
        assert wait_for(lambda: int(row[Queue.INTERRUPTS]) == 2, 1), "the third: one by time"
        time.sleep(0.2)
        assert int(row[Queue.INTERRUPTS]) == 2
    finally:
        counters.close()
        q.close()
        stop_process(dev.proc)
