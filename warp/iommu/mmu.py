"""The device side of SVA: the PASID table, per-PASID mappings, and DMA address translation.

A bind maps the process's heap memfd and page-table memfd into the device process and gives the
process one PASID, shared by all of its queues and refcounted like ``iommu_sva_bind_device``.
Every SQE address is translated here; a non-present page stalls the access on an I/O page fault,
and an address outside every mapping ends in an INVALID response, as on real SVA.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import threading
from dataclasses import dataclass
from typing import final

import numpy as np
import numpy.typing as npt

from warp import abi, shm
from warp.iommu import pagetable
from warp.iommu.fault import FaultHandler, Perm, Response


class TranslationFault(Exception):
    """The access could not be made valid (INVALID or FAILURE response): abort the job."""

    def __init__(self, response: Response, pages: int) -> None:
        super().__init__(f"I/O page fault answered {response.name} for {pages} page(s)")
        self.response = response
        self.pages = pages


@final
@dataclass(eq=False)
class Mapping:
    """One bound process address space as the device sees it."""

    pasid: int
    pid: int
    base: int
    size: int
    heap: mmap.mmap
    memory: npt.NDArray[np.uint8]
    page_table: pagetable.PageTable
    pt_map: mmap.mmap
    bonds: int = 1
    key: tuple[int, int, int] = (0, 0, 0)  # (pid, st_dev, st_ino) of the heap memfd

    def close(self) -> None:
        del self.memory
        self.page_table.release()
        shm.unmap(self.heap)
        shm.unmap(self.pt_map)


@dataclass(frozen=True)
class Access:
    """A translated DMA window: offset into the mapping's memory, length, and how many pages faulted."""

    offset: int
    length: int
    faults: int


@final
class Iommu:
    """PASID allocator and translator for every address space bound to the device."""

    def __init__(self, fault_counters: npt.NDArray[np.uint64], max_pasids: int = 1 << 20) -> None:
        self._lock = threading.Lock()
        self._by_space: dict[tuple[int, int, int], Mapping] = {}
        self._by_pasid: dict[int, Mapping] = {}
        self._next_pasid = 1  # PASID 0 is reserved for the kernel's own DMA
        self._max_pasids = max_pasids
        self.faults = FaultHandler(self, fault_counters)

    def bind(self, pid: int, heap_fd: int, pt_fd: int, base: int, size: int) -> Mapping:
        """SVA bind: reuse the address space's PASID if it already has one, else allocate.

        The kernel keys the bond by mm: one PASID per process. Here an address space is one SVA
        heap, and a process normally has one; a second heap in the same process (two runtimes)
        gets a PASID of its own, keyed by the heap's memfd, so a new heap is never mistaken for
        an old one whose queue file is still being released.
        """
        check_sealed(heap_fd, "heap")
        check_sealed(pt_fd, "page-table")
        st = os.fstat(heap_fd)
        key = (pid, st.st_dev, st.st_ino)
        with self._lock:
            existing = self._by_space.get(key)
            if existing is not None and existing.base == base and existing.size == size:
                existing.bonds += 1
                return existing
            if self._next_pasid >= self._max_pasids:
                raise OSError(28, "no PASID left")  # ENOSPC, as iommu_alloc_global_pasid
            if size <= 0 or size % abi.PAGE_SIZE or st.st_size < size:
                raise OSError(22, "heap size does not match its memfd")
            heap = mmap.mmap(heap_fd, size)
            pages = size >> abi.PAGE_SHIFT
            pt_map = mmap.mmap(pt_fd, pages)
            mapping = Mapping(pasid=self._next_pasid, pid=pid, base=base, size=size, heap=heap,
                              memory=np.frombuffer(heap, dtype=np.uint8),
                              page_table=memoryview(pt_map), pt_map=pt_map)
            self._next_pasid += 1
            mapping.key = key
            self._by_space[key] = mapping
            self._by_pasid[mapping.pasid] = mapping
            return mapping

    def unbind(self, mapping: Mapping) -> None:
        with self._lock:
            mapping.bonds -= 1
            if mapping.bonds:
                return
            if self._by_space.get(mapping.key) is mapping:
                del self._by_space[mapping.key]
            del self._by_pasid[mapping.pasid]
        mapping.close()

    def bound(self) -> list[Mapping]:
        with self._lock:
            return list(self._by_pasid.values())

    def reclaim(self, fraction: float, rng: np.random.Generator | None = None) -> int:
        """Memory pressure: make ``fraction`` of every bound mapping's present pages non-present.

        What kswapd or page migration does to a process's pages after the device first used them:
        the data stays (it went to swap, or moved), only the translation is gone, so the next DMA
        access takes an I/O page fault and faults it back in (reference §7 item 15). Runs under the
        PASID-table lock, so a mapping being unbound is never touched after its unbind returned.
        Returns how many present pages were taken.
        """
        if fraction <= 0:
            return 0
        clear = ~np.uint8(pagetable.PRESENT | pagetable.ACCESSED | pagetable.DIRTY)
        taken = 0
        with self._lock:
            for mapping in self._by_pasid.values():
                entries = np.frombuffer(mapping.page_table, dtype=np.uint8)
                victims = (entries & pagetable.PRESENT) != 0
                if fraction < 1:
                    victims &= (rng or np.random.default_rng()).random(entries.size) < fraction
                taken += int(np.count_nonzero(victims))
                entries[victims] &= clear
                del entries, victims
        return taken

    def translate(self, mapping: Mapping, addr: int, length: int, write: bool) -> Access:
        """Translate ``[addr, addr+length)`` under ``mapping``'s PASID, faulting pages in as needed.

        A stalled access is retried after a SUCCESS response; the retry bound covers a page being
        reclaimed again between the fault and the retry.
        """
        offset = addr - mapping.base
        if length == 0:
            return Access(offset=0, length=0, faults=0)
        perm = Perm.WRITE if write else Perm.READ
        if offset < 0 or offset + length > mapping.size:
            pages = _page_addrs(addr, length)
            response = self.faults.fault(mapping.pasid, pages, perm)
            raise TranslationFault(response if response is not Response.SUCCESS else Response.INVALID, len(pages))
        if pagetable.settled(mapping.page_table, offset, length, write):
            return Access(offset=offset, length=length, faults=0)  # nothing to fault in, no bit to set
        faults = 0
        for _attempt in range(8):
            missing = pagetable.missing_pages(mapping.page_table, offset, length, write)
            if not missing:
                pagetable.populate(mapping.page_table, offset, length, write)
                return Access(offset=offset, length=length, faults=faults)
            faults += len(missing)
            addrs = [mapping.base + (p << abi.PAGE_SHIFT) for p in missing]
            response = self.faults.fault(mapping.pasid, addrs, perm)
            if response is not Response.SUCCESS:
                raise TranslationFault(response, len(addrs))
        raise TranslationFault(Response.FAILURE, faults)

    def translate_job(self, mapping: Mapping, src: int, length: int, dst: int, capacity: int) -> tuple[int, int, int]:
        """Both windows of a job — read ``[src, +length)``, write ``[dst, +capacity)`` — as
        ``(source offset, destination offset, pages faulted)``; raises :class:`TranslationFault`.

        The engines' hot path: a warm pool's pages are all settled, and two range checks plus two
        :func:`~warp.iommu.pagetable.settled` tests cost a fraction of two :meth:`translate`
        calls (each a call chain and a result object, ~1.2 us); anything else takes them.
        """
        base, size, table = mapping.base, mapping.size, mapping.page_table
        source, target = src - base, dst - base
        if (length and capacity and 0 <= source and source + length <= size and 0 <= target
                and target + capacity <= size and pagetable.settled(table, source, length, False)
                and pagetable.settled(table, target, capacity, True)):
            return source, target, 0
        read = self.translate(mapping, src, length, write=False)
        written = self.translate(mapping, dst, capacity, write=True)
        return read.offset, written.offset, read.faults + written.faults

    def handle_mm_fault(self, pasid: int, addr: int, perm: Perm) -> Response:
        """``iommu_sva_handle_iopf``: find the mapping, check permission, make the page present."""
        mapping = self._by_pasid.get(pasid)
        if mapping is None:
            return Response.INVALID  # the process is gone
        offset = addr - mapping.base
        if offset < 0 or offset >= mapping.size:
            return Response.INVALID  # no vma
        page = offset >> abi.PAGE_SHIFT
        entry = mapping.page_table[page]
        if perm & Perm.WRITE and not entry & pagetable.WRITE:
            return Response.INVALID  # permission
        start = page << abi.PAGE_SHIFT
        # Really touch the page: a read allocates it in the memfd, a write-back dirties it.
        byte = mapping.memory[start]
        if perm & Perm.WRITE:
            mapping.memory[start] = byte
        pagetable.populate(mapping.page_table, start, 1, write=bool(perm & Perm.WRITE))
        return Response.SUCCESS


def _page_addrs(addr: int, length: int) -> list[int]:
    first = addr >> abi.PAGE_SHIFT
    last = (addr + length - 1) >> abi.PAGE_SHIFT
    return [p << abi.PAGE_SHIFT for p in range(first, min(last, first + 15) + 1)]


def check_sealed(fd: int, what: str) -> None:
    """Refuse (EPERM) a memfd its sender could still shrink: truncating a file the device has
    mapped makes the device's next access to those pages SIGBUS, killing it for every client."""
    try:
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
    except OSError:
        seals = 0  # not a memfd, or one created without MFD_ALLOW_SEALING
    if not seals & fcntl.F_SEAL_SHRINK:
        raise OSError(errno.EPERM, f"the {what} memfd must be sealed against shrinking (F_SEAL_SHRINK)")
