"""SVA memory: a buddy allocator over the process's heap, with a prefaulted buffer pool.

Blocks are page-aligned powers of two. Freed blocks go onto their order's list unmerged, so the
steady state — the same sizes coming and going — is a list pop and append; only when no block of
the order or above is free are free buddies merged (bottom-up), and a heap with nothing in use
is reset to its largest blocks — so a heap that served a burst of small buffers can still serve
the largest one again. Merging eagerly on every free cost ~10 µs a request in a 1 GiB heap
(eighteen levels of split and merge for each 4 KiB buffer).

Freed blocks keep their pages: a warm pool hands the device memory that is already present — no
I/O page faults in steady state, which is UADK's "prefault your buffers" advice made measurable.
An allocation whose pages are not all present (fresh memory, or pages the kernel reclaimed) is
prefaulted by the CPU before it is handed out, unless prefaulting is disabled to show what the
device pays for faults. The heap is bounded: when no block fits,
:class:`~warp.errors.HeapExhausted` tells the caller to back off.
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
        self._free: dict[int, list[int]] = {}
        self._in_use = 0
        self._hits = 0
        self._misses = 0
        self._exhausted = 0
        self._split = False  # a block was split since the lists were last pristine
        self._pristine()
        self.max_order = max(order for order, blocks in self._free.items() if blocks)

    def _pristine(self) -> None:
        """Free lists of an empty heap: the largest aligned blocks that cover it."""
        self._free = {order: [] for order in range(MIN_ORDER, self.space.size.bit_length())}
        offset = 0
        while offset < self.space.size:
            room = (self.space.size - offset).bit_length() - 1
            align = (offset & -offset).bit_length() - 1 if offset else room
            order = min(room, align)
            self._free[order].append(offset)
            offset += 1 << order
        self._split = False

    @staticmethod
    def order_of(size: int) -> int:
        """The order of the smallest block that holds ``size`` bytes (a page at least). Written
        without ``max()``: this runs twice per buffer, and builtin calls are most of its cost."""
        order = (size - 1).bit_length() if size > 1 else 0
        return order if order > MIN_ORDER else MIN_ORDER

    def alloc(self, size: int) -> Buffer:
        order = self.order_of(size)
        capacity = 1 << order
        with self._lock:
            offset = self._take(order)
            if offset is None:
                self._coalesce()
                offset = self._take(order)
            if offset is None:
                self._exhausted += 1
                raise HeapExhausted(f"no free {capacity}-byte block in a {self.space.size}-byte heap")
            self._in_use += capacity
            # Counted under the lock already taken; the prefault itself happens outside it.
            cold = self.prefault and bool(pagetable.missing_pages(self.space.page_table, offset, capacity, True))
            if cold:
                self._misses += 1
            else:
                self._hits += 1
        if cold:
            self.space.prefault(offset, capacity)
        return Buffer(self, offset, capacity)

    def _take(self, order: int) -> int | None:
        """Pop a block of ``order``, splitting the smallest larger one if needed (lock held)."""
        if order > self.max_order:
            return None
        blocks = self._free[order]
        if blocks:
            return blocks.pop()
        for have in range(order + 1, self.max_order + 1):
            larger = self._free[have]
            if larger:
                offset = larger.pop()
                self._split = True
                while have > order:  # keep the upper half of each split free
                    have -= 1
                    self._free[have].append(offset + (1 << have))
                return offset
        return None

    def _coalesce(self) -> None:
        """Merge every pair of free buddies, smallest order first (lock held)."""
        for order in range(MIN_ORDER, self.max_order):
            free = set(self._free[order])
            size = 1 << order
            keep: list[int] = []
            merged = self._free[order + 1]
            for offset in sorted(free):
                if offset not in free:
                    continue  # already merged with its lower buddy
                buddy = offset ^ size
                if buddy in free:
                    free.discard(buddy)
                    merged.append(min(offset, buddy))
                else:
                    keep.append(offset)
                free.discard(offset)
            self._free[order] = keep

    def free(self, buffer: Buffer) -> None:
        order = self.order_of(buffer.capacity)
        with self._lock:
            self._in_use -= 1 << order
            self._free[order].append(buffer.offset)
            if not self._in_use and self._split:
                self._pristine()  # all merged at once: an idle heap serves its largest block again

    def statistics(self) -> HeapStats:
        with self._lock:
            return HeapStats(capacity_bytes=self.space.size, in_use_bytes=self._in_use, hits=self._hits,
                             misses=self._misses, exhausted=self._exhausted)
