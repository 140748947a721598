"""Interrupt moderation by time: the timer half of ``--irq-coalesce`` / ``--irq-delay-us``.

By count, moderation needs nothing but a counter in the engine's batch loop (``Engines._batch``). By
time it needs a clock that fires while the engine is busy with a long job: the first unsignalled
completion of a queue arms a deadline ``delay`` later, and whichever comes first — ``coalesce``
completions or the deadline — raises the queue's interrupt, as NIC and QM interrupt moderation do.
The timer is a thread of its own (the interrupt controller), and everything it shares with the
engines is guarded by the queue's ``irq_lock``.
"""

from __future__ import annotations

import heapq
import itertools
import os
import threading
import time
from typing import Protocol, final

from warp.dfx import Queue


class Signalled(Protocol):
    """What the moderator needs of a queue pair (``qp.Qp``)."""

    irq_lock: threading.Lock
    irq_fd: int
    irq_count: int
    irq_deadline: int
    counters: memoryview

    @property
    def closed(self) -> bool:
        """Whether the queue's fds are gone (read under ``irq_lock``)."""


@final
class Moderator:
    """Raise at most one interrupt per ``coalesce`` completions, and never later than ``delay_ns``
    after the first completion that has not been signalled yet."""

    def __init__(self, coalesce: int, delay_ns: int) -> None:
        self.coalesce = coalesce
        self.delay_ns = delay_ns
        self._cond = threading.Condition()
        self._heap: list[tuple[int, int, Signalled]] = []
        self._seq = itertools.count()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="irq-timer", daemon=True)
        self._thread.start()

    def completed(self, qp: Signalled, count: int = 1) -> None:
        """``count`` CQEs were just posted on an armed queue."""
        with qp.irq_lock:
            if qp.closed:
                return
            if not qp.irq_count:
                qp.irq_deadline = time.monotonic_ns() + self.delay_ns
                with self._cond:
                    heapq.heappush(self._heap, (qp.irq_deadline, next(self._seq), qp))
                    if self._heap[0][2] is qp:
                        self._cond.notify()
            qp.irq_count += count
            if qp.irq_count >= self.coalesce:
                _raise(qp)

    def flush(self, qp: Signalled) -> None:
        """Signal whatever is pending now (the queue is stopping)."""
        with qp.irq_lock:
            if qp.irq_count and not qp.closed:
                _raise(qp)

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stop:
                    now = time.monotonic_ns()
                    if self._heap and self._heap[0][0] <= now:
                        deadline, _seq, qp = heapq.heappop(self._heap)
                        break
                    self._cond.wait((self._heap[0][0] - now) / 1e9 if self._heap else None)
                else:
                    return
            with qp.irq_lock:  # not under _cond: completed() takes irq_lock, then _cond
                if qp.irq_count and qp.irq_deadline == deadline and not qp.closed:
                    _raise(qp)


def _raise(qp: Signalled) -> None:
    """Raise the interrupt for everything pending (``irq_lock`` held)."""
    os.eventfd_write(qp.irq_fd, 1)
    qp.counters[Queue.INTERRUPTS] += 1
    qp.irq_count = 0
    qp.irq_deadline = 0
