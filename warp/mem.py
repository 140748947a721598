"""SVA memory: a size-class allocator over the process's heap, with a prefaulted buffer pool.

Buffers are page-aligned blocks of power-of-two size classes. A freed block goes back to its
class's free list and keeps its pages, so a warm pool hands the device memory that is already
present — no I/O page faults in steady state, which is UADK's "prefault your buffers" advice made
measurable. New blocks are prefaulted when they are carved from the heap (unless disabled), and
the heap is bounded: when no block fits, :class:`~warp.errors.HeapExhausted` tells the caller to
back off instead of growing without limit.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Final, final

from warp import abi
from warp.errors import HeapExhausted
from warp.iommu.space import AddressSpace

MIN_CLASS: Final = abi.PAGE_SHIFT


@final
@dataclass(frozen=True)
class HeapStats:
    capacity_bytes: int
    in_use_bytes: int
    carved_bytes: int
    hits: int
    misses: int
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
    """Thread-safe size-class allocator over one :class:`AddressSpace`."""

    def __init__(self, space: AddressSpace, prefault: bool = True) -> None:
        self.space = space
        self.prefault = prefault
        self._lock = threading.Lock()
        self._free: dict[int, list[int]] = {}
        self._bump = 0
        self._in_use = 0
        self._hits = 0
        self._misses = 0
        self._exhausted = 0

    @staticmethod
    def size_class(size: int) -> int:
        return max(MIN_CLASS, (max(size, 1) - 1).bit_length())

    def alloc(self, size: int) -> Buffer:
        cls = self.size_class(size)
        capacity = 1 << cls
        with self._lock:
            blocks = self._free.get(cls)
            if blocks:
                offset = blocks.pop()
                self._hits += 1
                fresh = False
            elif self._bump + capacity <= self.space.size:
                offset = self._bump
                self._bump += capacity
                self._misses += 1
                fresh = True
            else:
                self._exhausted += 1
                raise HeapExhausted(f"no free {capacity}-byte block in a {self.space.size}-byte heap")
            self._in_use += capacity
        if fresh and self.prefault:
            self.space.prefault(offset, capacity)
        return Buffer(self, offset, capacity)

    def free(self, buffer: Buffer) -> None:
        cls = self.size_class(buffer.capacity)
        with self._lock:
            self._free.setdefault(cls, []).append(buffer.offset)
            self._in_use -= buffer.capacity

    def statistics(self) -> HeapStats:
        with self._lock:
            return HeapStats(capacity_bytes=self.space.size, in_use_bytes=self._in_use, carved_bytes=self._bump,
                             hits=self._hits, misses=self._misses, exhausted=self._exhausted)
