"""SVA memory: a buddy allocator over the process's heap, with a prefaulted buffer pool.

Blocks are page-aligned powers of two. A free block merges with its free buddy, so a heap that
served a burst of small buffers can serve the largest one again once they are back (a per-class
free list without merging fragments for good). Freed blocks keep their pages: a warm pool hands
the device memory that is already present — no I/O page faults in steady state, which is UADK's
"prefault your buffers" advice made measurable. An allocation whose pages are not all present
(fresh memory, or pages the kernel reclaimed) is prefaulted by the CPU before it is handed out,
unless prefaulting is disabled to show what the device pays for faults. The heap is bounded:
when no block fits, :class:`~warp.errors.HeapExhausted` tells the caller to back off.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Final, final

from warp import abi
from warp.errors import HeapExhausted
from warp.iommu import pagetable
from warp.iommu.space import AddressSpace

MIN_ORDER: Final = abi.PAGE_SHIFT


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
        self._free: dict[int, set[int]] = {}
        self._in_use = 0
        self._hits = 0
        self._misses = 0
        self._exhausted = 0
        offset = 0
        while offset < space.size:  # cover a heap of any page multiple with aligned top blocks
            order = min((space.size - offset).bit_length() - 1, (offset & -offset).bit_length() - 1
                        if offset else 63)
            self._free.setdefault(order, set()).add(offset)
            offset += 1 << order
        self.max_order = max(self._free)

    @staticmethod
    def order_of(size: int) -> int:
        return max(MIN_ORDER, (max(size, 1) - 1).bit_length())

    def alloc(self, size: int) -> Buffer:
        order = self.order_of(size)
        with self._lock:
            offset = self._take(order)
            if offset is None:
                self._exhausted += 1
                raise HeapExhausted(f"no free {1 << order}-byte block in a {self.space.size}-byte heap")
            self._in_use += 1 << order
        capacity = 1 << order
        cold = self.prefault and bool(pagetable.missing_pages(self.space.page_table, offset, capacity, write=True))
        if cold:
            self.space.prefault(offset, capacity)
        with self._lock:
            if cold:
                self._misses += 1
            else:
                self._hits += 1
        return Buffer(self, offset, capacity)

    def _take(self, order: int) -> int | None:
        """Pop a block of ``order``, splitting a larger one if needed (lock held)."""
        for have in range(order, self.max_order + 1):
            blocks = self._free.get(have)
            if blocks:
                offset = blocks.pop()
                while have > order:  # keep the upper half of each split free
                    have -= 1
                    self._free.setdefault(have, set()).add(offset + (1 << have))
                return offset
        return None

    def free(self, buffer: Buffer) -> None:
        order = self.order_of(buffer.capacity)
        offset = buffer.offset
        with self._lock:
            self._in_use -= 1 << order
            while order < self.max_order:
                buddy = offset ^ (1 << order)
                siblings = self._free.get(order)
                if not siblings or buddy not in siblings:
                    break
                siblings.remove(buddy)
                offset = min(offset, buddy)
                order += 1
            self._free.setdefault(order, set()).add(offset)

    def statistics(self) -> HeapStats:
        with self._lock:
            return HeapStats(capacity_bytes=self.space.size, in_use_bytes=self._in_use, hits=self._hits,
                             misses=self._misses, exhausted=self._exhausted)
