"""The process side of SVA: one address space (heap) per process, shareable with the device.

The heap is a memfd mapped into this process; the addresses written into SQEs are its real
virtual addresses (``base`` + offset), exactly what SVA lets a user hand to a device. The device
receives the memfd and the page-table memfd when a queue binds and translates those addresses back
through the page table, so nothing is copied and nothing is pinned.
"""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
from typing import final

import numpy as np
import numpy.typing as npt

from warp import abi, shm
from warp.iommu import pagetable


@final
class AddressSpace:
    """A memfd-backed SVA heap plus its page table, as seen by the owning process."""

    def __init__(self, size: int) -> None:
        if size <= 0 or size % abi.PAGE_SIZE:
            raise ValueError(f"heap size must be a positive multiple of {abi.PAGE_SIZE}")
        self.size = size
        self.heap_fd = _sealed_memfd("warp-sva-heap", size)
        self._heap = mmap.mmap(self.heap_fd, size)
        self.view = memoryview(self._heap)
        self.array: npt.NDArray[np.uint8] = np.frombuffer(self._heap, dtype=np.uint8)
        self.base = ctypes.addressof(ctypes.c_char.from_buffer(self._heap))
        pages = size >> abi.PAGE_SHIFT
        self.pt_fd = _sealed_memfd("warp-sva-pagetable", pages)
        self._pt = mmap.mmap(self.pt_fd, pages)
        self.page_table: pagetable.PageTable = memoryview(self._pt)
        self._pt.write(bytes([pagetable.WRITE]) * pages)  # one read-write mapping, nothing faulted in yet

    def address(self, offset: int) -> int:
        """The virtual address a device sees for ``offset``: the process's own pointer."""
        return self.base + offset

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Copy ``data`` in through the CPU: its pages become present and dirty."""
        n = len(data)
        self.view[offset:offset + n] = data
        pagetable.populate(self.page_table, offset, n, write=True)

    def prefault(self, offset: int, length: int) -> None:
        """Touch every page now, so later device accesses find them present (UADK's advice)."""
        first, end = pagetable.page_span(offset, length)
        self.array[first << abi.PAGE_SHIFT:end << abi.PAGE_SHIFT:abi.PAGE_SIZE] = 0
        pagetable.populate(self.page_table, offset, length, write=True)

    def reclaim(self, offset: int, length: int) -> int:
        """Simulate the kernel taking pages away (swap, migration); the next DMA faults."""
        return pagetable.reclaim(self.page_table, offset, length)

    def protect(self, offset: int, length: int) -> None:
        """Make the range read-only: a device write to it is an unrecoverable fault."""
        pagetable.protect(self.page_table, offset, length)

    def close(self) -> None:
        """Close the memfds and unmap (deferred while buffers still view the heap)."""
        del self.array
        for view in (self.view, self.page_table):
            try:
                view.release()
            except BufferError:
                pass
        shm.unmap(self._heap)
        shm.unmap(self._pt)
        os.close(self.heap_fd)
        os.close(self.pt_fd)


#: What the device requires of every memfd it maps (:func:`warp.iommu.mmu.check_sealed`).
SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL


def _sealed_memfd(name: str, size: int) -> int:
    """A memfd of ``size`` bytes that nobody can resize any more: the device maps it, and a file
    truncated under a mapping makes every later access SIGBUS — in the device, for every client."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(fd, size)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, SEALS)
    except BaseException:
        os.close(fd)
        raise
    return fd
