"""Page-table entry bits and range helpers over a shared ``uint8`` array, one entry per 4 KiB page.

The table lives in a memfd that the process creates and the device maps, so the CPU side (which
populates pages when it writes them) and the IOMMU side (which checks them on every DMA access)
see one table, as an SMMU walking the process's own page tables does.

Two kinds of bit share an entry. PRESENT, WRITE, ACCESSED and DIRTY are the PTE's: what the
IOMMU walk reads, and what reclaim takes away. ``VM_WRITE`` is the protection of the VMA that
covers the page (what ``mprotect`` sets), kept per page here instead of in a VMA tree: only the
fault handler reads it, as ``iommu_sva_handle_iopf`` checks ``vma->vm_flags``. A present page
whose PTE is not writable in a writable VMA (a copy-on-write page, or one the device only read)
faults on a write and is made writable; a write into a VMA without ``VM_WRITE`` is INVALID.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from warp import abi

PRESENT: Final = 1 << 0
WRITE: Final = 1 << 1
ACCESSED: Final = 1 << 2
DIRTY: Final = 1 << 3
VM_WRITE: Final = 1 << 4  # the VMA's protection, not a PTE bit
#: Every PTE bit: what unmapping a page clears (the VMA's protection stays).
PTE_BITS: Final = PRESENT | WRITE | ACCESSED | DIRTY

#: Spans up to this many pages are handled entry by entry; longer ones through numpy, whose
#: per-call overhead (about a microsecond) only pays off over many entries.
SMALL_SPAN: Final = 8

PageTable = memoryview  # format "B", one entry per page


def page_span(offset: int, length: int) -> tuple[int, int]:
    """First page and one past the last page touched by ``[offset, offset + length)``."""
    first = offset >> abi.PAGE_SHIFT
    last = (offset + length - 1) >> abi.PAGE_SHIFT if length > 1 else first
    return first, last + 1


def _entries(table: PageTable, first: int, end: int) -> npt.NDArray[np.uint8]:
    return np.frombuffer(table, dtype=np.uint8, count=end - first, offset=first)


def _unsettled(need: int) -> bytes:
    """A ``bytes.translate`` table: 0 for an entry that already has every bit of ``need``, 1 otherwise."""
    return bytes(0 if entry & need == need else 1 for entry in range(256))


#: Per access kind (write?): entries a DMA access would neither fault on nor change.
_UNSETTLED: Final = (_unsettled(PRESENT | ACCESSED), _unsettled(PRESENT | WRITE | ACCESSED | DIRTY))


def settled(table: PageTable, offset: int, length: int, write: bool) -> bool:
    """Whether an access of this kind finds every page of the range present and already marked
    (accessed, and dirty for a write): the steady state of a warm pool, where the walk would
    neither fault nor change an entry. Three C calls over the span, whatever its length —
    the per-entry loop or numpy's per-call overhead cost microseconds per job."""
    span = table[offset >> abi.PAGE_SHIFT:((offset + max(length, 1) - 1) >> abi.PAGE_SHIFT) + 1]
    return b"\x01" not in span.tobytes().translate(_UNSETTLED[write])


def missing_pages(table: PageTable, offset: int, length: int, write: bool) -> list[int]:
    """Pages in the range that a DMA access of this kind would fault on."""
    first, end = page_span(offset, length)
    need = PRESENT | WRITE if write else PRESENT
    if end - first <= SMALL_SPAN:
        return [p for p in range(first, end) if table[p] & need != need]
    return (np.flatnonzero((_entries(table, first, end) & need) != need) + first).tolist()


def populate(table: PageTable, offset: int, length: int, write: bool) -> None:
    """Mark pages present and accessed (and, on a write, writable and dirty): the CPU or IOMMU
    used them. A write that happened had a writable PTE; whether it may happen is the VMA's
    question, asked by the fault handler before it populates."""
    first, end = page_span(offset, length)
    bits = PRESENT | ACCESSED | (WRITE | DIRTY if write else 0)
    if end - first <= SMALL_SPAN:
        for p in range(first, end):
            table[p] |= bits
    else:
        entries = _entries(table, first, end)
        entries |= bits


def reclaim(table: PageTable, offset: int, length: int) -> int:
    """Unmap pages as memory pressure or migration would; returns how many were present."""
    first, end = page_span(offset, length)
    entries = _entries(table, first, end)
    was = int(np.count_nonzero(entries & PRESENT))
    entries &= ~np.uint8(PTE_BITS)
    return was


def protect(table: PageTable, offset: int, length: int) -> None:
    """``mprotect(PROT_READ)``: the VMA loses write permission, and its PTEs with it."""
    first, end = page_span(offset, length)
    entries = _entries(table, first, end)
    entries &= ~np.uint8(VM_WRITE | WRITE)
