"""Interrupt moderation (``warp.device.irq.Moderator``) on a stand-in queue: one interrupt per
``coalesce`` completions, never later than ``delay`` after the first unsignalled one, and whatever
is pending at a flush. No device process: the queue is an eventfd and a counter row."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

from tests.harness import wait_until
from warp.device.irq import Moderator
from warp.dfx import Queue

LONG_NS = 60 * 10**9  # a delay no test reaches: only the count or a flush can signal
SHORT_NS = 30 * 10**6


@dataclass(eq=False)
class FakeQueue:
    """What the moderator touches of a queue pair."""

    irq_fd: int = field(default_factory=lambda: os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC))
    counters: memoryview = field(default_factory=lambda: memoryview(bytearray(8 * len(Queue))).cast("Q"))
    irq_lock: threading.Lock = field(default_factory=threading.Lock)
    irq_count: int = 0
    irq_deadline: int = 0
    closed: bool = False

    @property
    def interrupts(self) -> int:
        return int(self.counters[Queue.INTERRUPTS])

    def signalled(self) -> int:
        """The interrupts the eventfd holds (and consume them), as the user's wait would."""
        try:
            return os.eventfd_read(self.irq_fd)
        except BlockingIOError:
            return 0


@pytest.fixture
def queue() -> Iterator[FakeQueue]:
    q = FakeQueue()
    yield q
    os.close(q.irq_fd)


@contextmanager
def moderating(coalesce: int, delay_ns: int) -> Iterator[Moderator]:
    m = Moderator(coalesce, delay_ns)
    try:
        yield m
    finally:
        m.close()


@pytest.fixture
def by_count() -> Iterator[Moderator]:
    with moderating(4, LONG_NS) as m:
        yield m


@pytest.fixture
def by_time() -> Iterator[Moderator]:
    with moderating(4, SHORT_NS) as m:
        yield m


def test_one_interrupt_per_coalesce_completions(by_count: Moderator, queue: FakeQueue) -> None:
    for _ in range(3):
        by_count.completed(queue)
    assert queue.interrupts == 0 and queue.signalled() == 0
    assert queue.irq_count == 3
    by_count.completed(queue)
    assert queue.interrupts == 1 and queue.signalled() == 1
    assert queue.irq_count == 0 and queue.irq_deadline == 0, "signalled: nothing pending, no deadline"
    for _ in range(8):
        by_count.completed(queue)
    assert queue.interrupts == 3 and queue.signalled() == 2


def test_completions_posted_together_count_together(by_count: Moderator, queue: FakeQueue) -> None:
    """A drain posts many CQEs at once: one interrupt for all of them."""
    by_count.completed(queue, 3)
    assert queue.interrupts == 0
    by_count.completed(queue, 6)
    assert queue.interrupts == 1 and queue.signalled() == 1


def test_the_deadline_runs_from_the_first_unsignalled_completion(by_time: Moderator, queue: FakeQueue) -> None:
    before = time.monotonic_ns()
    by_time.completed(queue)
    deadline = queue.irq_deadline
    assert before + SHORT_NS <= deadline <= time.monotonic_ns() + SHORT_NS
    by_time.completed(queue)
    assert queue.irq_deadline == deadline, "a later completion does not push the deadline out"
    assert queue.interrupts == 0, "two of four completions, the deadline not reached"
    wait_until(lambda: queue.interrupts == 1, 5, "the timer's interrupt")
    assert time.monotonic_ns() >= deadline
    assert queue.signalled() == 1 and queue.irq_count == 0


def test_a_deadline_of_completions_signalled_by_count_raises_nothing(queue: FakeQueue) -> None:
    """The count signals the first four; the fifth arms a later deadline, and the timer's entry
    for the first must not fire early for the fifth."""
    delay = 300 * 10**6
    with moderating(4, delay) as m:
        for _ in range(4):
            m.completed(queue)
        first = time.monotonic_ns() + delay  # no earlier than the first deadline
        assert queue.interrupts == 1
        time.sleep(delay / 2 / 1e9)
        m.completed(queue)
        second = queue.irq_deadline
        time.sleep(max(first + (second - first) // 2 - time.monotonic_ns(), 0) / 1e9)
        seen = queue.interrupts
        assert seen == 1 or time.monotonic_ns() >= second, "raised between the two deadlines"
        wait_until(lambda: queue.interrupts == 2, 5, "the second deadline's interrupt")
        assert queue.signalled() == 2


def test_a_flush_signals_what_is_pending_and_only_that(by_count: Moderator, queue: FakeQueue) -> None:
    by_count.flush(queue)
    assert queue.interrupts == 0, "nothing pending: no interrupt"
    by_count.completed(queue, 2)
    by_count.flush(queue)
    assert queue.interrupts == 1 and queue.signalled() == 1
    assert queue.irq_count == 0
    by_count.flush(queue)
    assert queue.interrupts == 1


def test_a_closed_queue_is_never_signalled(by_time: Moderator, queue: FakeQueue) -> None:
    by_time.completed(queue)
    with queue.irq_lock:
        queue.closed = True
    time.sleep(3 * SHORT_NS / 1e9)
    by_time.completed(queue, 10)
    by_time.flush(queue)
    assert queue.interrupts == 0 and queue.signalled() == 0
