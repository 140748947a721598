"""SVA memory: the process's heap handed out in buddy blocks, with a prefaulted buffer pool.

The block bookkeeping (powers of two, lazy merging) is :class:`~warp.buddy.Buddy`; this module adds
the memory, a lock and the pool's warmth. Freed blocks keep their pages: a warm pool hands the
device memory that is already present — no I/O page faults in steady state, which is UADK's
"prefault your buffers" advice made measurable. An allocation whose pages are not all present
(fresh memory, or pages the kernel reclaimed) is prefaulted by the CPU before it is handed out,
unless prefaulting is disabled to show what the device pays for faults. The heap is bounded: when
no block fits, :class:`~warp.errors.HeapExhausted` tells the caller to back off.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import final

from warp.buddy import Buddy, order_of
from warp.errors import HeapExhausted
from warp.iommu import pagetable
from warp.sva import AddressSpace


@final
@dataclass(frozen=True)
class HeapStats:
    capacity_bytes: int
    in_use_bytes: int
    hits: int  # allocations whose pages were all present already
    misses: int  # allocations that had to be faulted in
    exhausted: int


@final
class Buffer:
    """A block of the SVA heap: ``view`` is its memory, ``address`` what a device is given."""

    __slots__ = ("heap", "offset", "capacity", "view", "address", "_released")

    def __init__(self, heap: SvaHeap, offset: int, capacity: int) -> None:
        self.heap = heap
        self.offset = offset
        self.capacity = capacity
        self.view = heap.space.view[offset:offset + capacity]
        self.address = heap.space.address(offset)
        self._released = False

    def write(self, at: int, data: bytes | bytearray | memoryview) -> None:
        """CPU write into the buffer (populates its pages in the page table)."""
        if at + len(data) > self.capacity:
            raise ValueError("write past the end of the buffer")
        self.heap.space.write(self.offset + at, data)

    def borrow(self, at: int, size: int) -> Buffer:
        """``[at, at + size)`` of this block as a buffer that does not own it: its ``release``
        does nothing (the block goes back with this buffer). One BD of a split job uses one."""
        if at < 0 or size < 0 or at + size > self.capacity:
            raise ValueError("borrowed window outside the buffer")
        window = Buffer(self.heap, self.offset + at, size)
        window._released = True
        return window

    def release(self) -> None:
        """Return the block to its pool; safe to call twice."""
        if not self._released:
            self._released = True
            self.heap.free(self)

    def __enter__(self) -> Buffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@final
class SvaHeap:
    """Thread-safe buddy allocator over one :class:`AddressSpace`."""

    def __init__(self, space: AddressSpace, prefault: bool = True) -> None:
        self.space = space
        self.prefault = prefault
        self._lock = threading.Lock()
        self._blocks = Buddy(space.size)
        self._hits = 0
        self._misses = 0
        self._exhausted = 0

    def alloc(self, size: int) -> Buffer:
        order = order_of(size)
        capacity = 1 << order
        with self._lock:
            offset = self._blocks.take(order)
            if offset is None:
                self._exhausted += 1
                raise HeapExhausted(f"no free {capacity}-byte block in a {self.space.size}-byte heap")
            # Counted under the lock already taken; the prefault itself happens outside it.
            cold = self.prefault and bool(pagetable.missing_pages(self.space.page_table, offset, capacity, True))
            if cold:
                self._misses += 1
            else:
                self._hits += 1
        if cold:
            self.space.prefault(offset, capacity)
        return Buffer(self, offset, capacity)

    def free(self, buffer: Buffer) -> None:
        with self._lock:
            self._blocks.give(buffer.offset, order_of(buffer.capacity))

    def statistics(self) -> HeapStats:
        with self._lock:
            return HeapStats(capacity_bytes=self.space.size, in_use_bytes=self._blocks.in_use, hits=self._hits,
                             misses=self._misses, exhausted=self._exhausted)
