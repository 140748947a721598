"""Page-table entry bits and range helpers over a shared ``uint8`` array, one entry per 4 KiB page.

The table lives in a memfd that the process creates and the device maps, so the CPU side (which
populates pages when it writes them) and the IOMMU side (which checks them on every DMA access)
see one table, as an SMMU walking the process's own page tables does.
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

PageTable = npt.NDArray[np.uint8]


def page_span(offset: int, length: int) -> tuple[int, int]:
    """First page and one past the last page touched by ``[offset, offset + length)``."""
    first = offset >> abi.PAGE_SHIFT
    last = (offset + max(length, 1) - 1) >> abi.PAGE_SHIFT
    return first, last + 1


def missing_pages(table: PageTable, offset: int, length: int, write: bool) -> npt.NDArray[np.intp]:
    """Indexes of pages in the range that a DMA access of this kind would fault on."""
    first, end = page_span(offset, length)
    need = PRESENT | WRITE if write else PRESENT
    entries = table[first:end]
    return np.flatnonzero((entries & need) != need) + first


def populate(table: PageTable, offset: int, length: int, write: bool) -> None:
    """CPU fault path: the pages are now backed; a write also dirties them."""
    first, end = page_span(offset, length)
    table[first:end] |= PRESENT | ACCESSED | (DIRTY if write else 0)


def reclaim(table: PageTable, offset: int, length: int) -> int:
    """Unmap pages as memory pressure or migration would; returns how many were present."""
    first, end = page_span(offset, length)
    entries = table[first:end]
    was = int(np.count_nonzero(entries & PRESENT))
    entries &= ~np.uint8(PRESENT | ACCESSED | DIRTY)
    return was
