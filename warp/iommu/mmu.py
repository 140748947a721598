"""The device side of SVA: the PASID table, per-PASID mappings, and DMA address translation.

A bind maps the process's heap memfd and page-table memfd into the device process and gives the
process one PASID, shared by all of its queues and refcounted like ``iommu_sva_bind_device``.
Every SQE address is translated here. An access walks its pages in order and stalls at each page
it cannot use — not present, or not writable for a write — on an I/O page fault of that one page;
SUCCESS resumes it at that page, anything else aborts the job there, the pages before it already
used. An address outside every mapping ends in an INVALID response, as on real SVA.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import threading
from dataclasses import dataclass
from typing import Final, final

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


#: :meth:`Iommu.translate_job`'s destination offset when the engine must write it page by page.
STAGED: Final = -1


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
        clear = ~np.uint8(pagetable.PTE_BITS)
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

    def translate_job(self, mapping: Mapping, src: int, length: int, dst: int, capacity: int) -> tuple[int, int, int]:
        """Both windows of a job — read ``[src, +length)``, write ``[dst, +capacity)`` — as
        ``(source offset, destination offset, pages faulted)``; raises :class:`TranslationFault`.

        The engines' hot path: a warm pool's pages are all settled, and two range checks plus two
        :func:`~warp.iommu.pagetable.settled` tests are all a job costs. Otherwise the source is
        read page by page (:meth:`fault_in`), and a destination with a page the engine cannot
        write yet comes back :data:`STAGED`: the engine writes it page by page (:meth:`store`),
        faulting only the pages its output reaches.
        """
        base, size, table = mapping.base, mapping.size, mapping.page_table
        source, target = src - base, dst - base
        direct = capacity > 0 and 0 <= target and target + capacity <= size and pagetable.settled(
            table, target, capacity, True)
        if (direct and length and 0 <= source and source + length <= size
                and pagetable.settled(table, source, length, False)):
            return source, target, 0
        faults = self.fault_in(mapping, src, length, write=False)
        return (source if length else 0), (target if direct else STAGED), faults

    def fault_in(self, mapping: Mapping, addr: int, length: int, write: bool) -> int:
        """Walk ``[addr, +length)`` as the engine's access does, stalling at each page it cannot
        use; returns the pages faulted, or raises :class:`TranslationFault` at the first failure."""
        faults = 0
        for page in self._stalls(mapping, addr - mapping.base, length, write):
            faults += 1
            self._stall(mapping, page, write, faults)
        if length:
            pagetable.populate(mapping.page_table, addr - mapping.base, length, write)
        return faults

    def store(self, mapping: Mapping, dst: int, data: npt.NDArray[np.uint8]) -> int:
        """The engine's output written to ``dst`` as the hardware writes it: in order, stalling at
        each page it cannot write; the pages before a failed one keep what was written. Returns
        the pages faulted, or raises :class:`TranslationFault`."""
        offset, length = dst - mapping.base, len(data)
        done = faults = 0
        for page in self._stalls(mapping, offset, length, write=True):
            upto = max(page - offset, done)
            mapping.memory[offset + done:offset + upto] = data[done:upto]
            done = upto
            faults += 1
            self._stall(mapping, page, True, faults)
        mapping.memory[offset + done:offset + length] = data[done:]
        if length:
            pagetable.populate(mapping.page_table, offset, length, write=True)
        return faults

    @staticmethod
    def _stalls(mapping: Mapping, offset: int, length: int, write: bool) -> list[int]:
        """Offsets of the pages an access stalls at, in order: those of the mapping it cannot use
        as they are now, then the first page past the mapping, where the walk will end."""
        if not length:
            return []
        first, end = pagetable.page_span(offset, length)
        limit = mapping.size >> abi.PAGE_SHIFT
        if first < 0 or first >= limit:
            return [first << abi.PAGE_SHIFT]
        pages = pagetable.missing_pages(mapping.page_table, first << abi.PAGE_SHIFT,
                                        (min(end, limit) - first) << abi.PAGE_SHIFT, write)
        if end > limit:
            pages.append(limit)
        return [page << abi.PAGE_SHIFT for page in pages]

    def _stall(self, mapping: Mapping, page: int, write: bool, faults: int) -> None:
        """One I/O page fault for the page at ``page``: resume on SUCCESS, else abort."""
        response = self.faults.fault(mapping.pasid, [mapping.base + page], Perm.WRITE if write else Perm.READ)
        if response is not Response.SUCCESS:
            raise TranslationFault(response, faults)

    def handle_mm_fault(self, pasid: int, addr: int, perm: Perm) -> Response:
        """``iommu_sva_handle_iopf``: find the mapping, check permission, make the page present."""
        mapping = self._by_pasid.get(pasid)
        if mapping is None:
            return Response.INVALID  # the process is gone
        offset = addr - mapping.base
        if offset < 0 or offset >= mapping.size:
            return Response.INVALID  # no vma
        page = offset >> abi.PAGE_SHIFT
        if perm & Perm.WRITE and not mapping.page_table[page] & pagetable.VM_WRITE:
            return Response.INVALID  # the VMA's permission; a write-protected PTE in it is fixed
        start = page << abi.PAGE_SHIFT
        # Really touch the page: a read allocates it in the memfd, a write-back dirties it.
        byte = mapping.memory[start]
        if perm & Perm.WRITE:
            mapping.memory[start] = byte
        pagetable.populate(mapping.page_table, start, 1, write=bool(perm & Perm.WRITE))
        return Response.SUCCESS


def check_sealed(fd: int, what: str) -> None:
    """Refuse (EPERM) a memfd its sender could still shrink: truncating a file the device has
    mapped makes the device's next access to those pages SIGBUS, killing it for every client."""
    try:
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
    except OSError:
        seals = 0  # not a memfd, or one created without MFD_ALLOW_SEALING
    if not seals & fcntl.F_SEAL_SHRINK:
        raise OSError(errno.EPERM, f"the {what} memfd must be sealed against shrinking (F_SEAL_SHRINK)")
