"""The process side of SVA: one address space (heap) per process, shareable with the device (the
device side — translation, page faults — is warp.iommu).

The heap is a memfd mapped into this process; the addresses written into SQEs are its real
virtual addresses (``base`` + offset), exactly what SVA lets a user hand to a device. The device
receives the memfd and the page-table memfd when a queue binds and translates those addresses back
through the page table, so nothing is copied and nothing is pinned.

fork: a device bound by SVA follows the parent's mm, never the child's copy of it, so a child must
share none of the heap's pages with the parent (and through it with the device). The heap and its
page table are ``MADV_DONTFORK`` — the kernel's ``VM_DONTCOPY``, which uacce also sets on its queue
regions — and the child then puts zero-filled private memory at the same addresses: what
``MADV_WIPEONFORK`` (uacce's other flag) gives a child. WIPEONFORK itself is refused (EINVAL) on a
shared file mapping, which the heap must be for the device to map it; and a hole alone would let
the child's next mapping land under the inherited ``mmap`` objects, which unmap it when collected.
The child also closes its copies of the memfds: binding them would give it the parent's pages.
"""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
import weakref
from typing import Final, final

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
        self._heap = not_inherited(mmap.mmap(self.heap_fd, size))
        self.view = memoryview(self._heap)
        self.array: npt.NDArray[np.uint8] = np.frombuffer(self._heap, dtype=np.uint8)
        self.base = ctypes.addressof(ctypes.c_char.from_buffer(self._heap))
        pages = size >> abi.PAGE_SHIFT
        self.pt_fd = _sealed_memfd("warp-sva-pagetable", pages)
        self._pt = not_inherited(mmap.mmap(self.pt_fd, pages))
        self.page_table: pagetable.PageTable = memoryview(self._pt)
        self._pt.write(bytes([pagetable.VM_WRITE]) * pages)  # one read-write VMA, nothing faulted in yet
        _SPACES.add(self)

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
        """``mprotect(PROT_READ)`` on the range: a device write to it is an unrecoverable fault."""
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
        self._drop_files()

    def _drop_files(self) -> None:
        """Close the memfds (once: a forked child closed its copies already)."""
        for fd in (self.heap_fd, self.pt_fd):
            if fd >= 0:
                os.close(fd)
        self.heap_fd = self.pt_fd = -1


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


_PROT_RW: Final = mmap.PROT_READ | mmap.PROT_WRITE
_MAP_FIXED_NOREPLACE: Final = 0x100000  # Linux >= 4.17; not exported by the mmap module
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
_libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)

#: Every live mapping a child must not inherit, with its address and length.
_NOT_INHERITED: weakref.WeakKeyDictionary[mmap.mmap, tuple[int, int]] = weakref.WeakKeyDictionary()
_SPACES: weakref.WeakSet[AddressSpace] = weakref.WeakSet()
#: In a child: inherited mappings whose range something else took before it could be refilled;
#: kept forever, so collecting them never unmaps what lives there now.
_PINNED: list[mmap.mmap] = []


def not_inherited(mapping: mmap.mmap) -> mmap.mmap:
    """Mark a shared mapping ``MADV_DONTFORK`` and have a forked child refill its range with
    zero-filled private memory (the module docstring says why); returns ``mapping``."""
    mapping.madvise(mmap.MADV_DONTFORK)
    address = ctypes.addressof(ctypes.c_char.from_buffer(mapping))
    _NOT_INHERITED[mapping] = (address, len(mapping))
    return mapping


def _wipe_in_child() -> None:
    """``os.register_at_fork(after_in_child=...)``: refill every range fork left out, and close
    the child's copies of every heap's memfds."""
    for mapping, (address, length) in list(_NOT_INHERITED.items()):
        if mapping.closed:
            continue
        got = _libc.mmap(address, length, _PROT_RW, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _MAP_FIXED_NOREPLACE,
                         -1, 0)
        if got != address:  # EEXIST: the interpreter mapped something there since the fork
            if got is not None and got != ctypes.c_void_p(-1).value:
                _libc.munmap(got, length)  # a kernel that took NOREPLACE as a mere hint
            _PINNED.append(mapping)
    for space in list(_SPACES):
        space._drop_files()


os.register_at_fork(after_in_child=_wipe_in_child)
