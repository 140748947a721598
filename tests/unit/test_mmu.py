"""Device-side translation of a job's two windows (``Iommu.translate_job``), in one process."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pytest

from warp.iommu import pagetable
from warp.iommu.fault import COUNTER_COLUMNS, FaultCounter
from warp.iommu.mmu import Iommu, Mapping, TranslationFault
from warp.iommu.space import AddressSpace

PAGE = 4096


@pytest.fixture
def bound() -> Iterator[tuple[Iommu, Mapping, AddressSpace, np.ndarray]]:
    space = AddressSpace(64 * PAGE)
    counters = np.zeros(COUNTER_COLUMNS, dtype=np.uint64)
    iommu = Iommu(counters)
    mapping = iommu.bind(os.getpid(), space.heap_fd, space.pt_fd, space.base, space.size)
    yield iommu, mapping, space, counters
    iommu.unbind(mapping)
    iommu.faults.close()
    space.close()


def test_warm_windows_take_the_fast_path(bound: tuple[Iommu, Mapping, AddressSpace, np.ndarray]) -> None:
    iommu, mapping, space, counters = bound
    space.prefault(0, 16 * PAGE)  # the CPU wrote them: present, accessed, dirty
    assert iommu.translate_job(mapping, space.address(100), 3 * PAGE, space.address(8 * PAGE), 4 * PAGE) \
        == (100, 8 * PAGE, 0)
    assert int(counters[FaultCounter.REQUESTS]) == 0


def test_cold_windows_fault_in_and_are_marked(bound: tuple[Iommu, Mapping, AddressSpace, np.ndarray]) -> None:
    """Not settled: the full walk, one I/O page fault per missing page, bits set after."""
    iommu, mapping, space, counters = bound
    space.prefault(0, PAGE)  # the source page only
    assert iommu.translate_job(mapping, space.address(0), PAGE, space.address(4 * PAGE), 2 * PAGE) \
        == (0, 4 * PAGE, 2)
    assert int(counters[FaultCounter.PAGES_OK]) == 2
    assert pagetable.settled(space.page_table, 4 * PAGE, 2 * PAGE, write=True)
    space.protect(0, PAGE)
    with pytest.raises(TranslationFault):  # a read-only page as the destination
        iommu.translate_job(mapping, space.address(4 * PAGE), PAGE, space.address(0), PAGE)


def test_windows_outside_the_heap_fault_invalid(bound: tuple[Iommu, Mapping, AddressSpace, np.ndarray]) -> None:
    iommu, mapping, space, _counters = bound
    space.prefault(0, 64 * PAGE)
    with pytest.raises(TranslationFault):  # the destination runs past the end of the heap
        iommu.translate_job(mapping, space.address(0), PAGE, space.address(63 * PAGE), 2 * PAGE)
    with pytest.raises(TranslationFault):
        iommu.translate_job(mapping, space.base - PAGE, PAGE, space.address(0), PAGE)
