"""Device-side translation (``Iommu``) and the fault handler, in one process: the hot path, and
I/O page faults taken per page, in access order, mid-job (reference §4.2, §7 items 13 and 14)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pytest

from warp.iommu import pagetable
from warp.iommu.fault import COUNTER_COLUMNS, FaultCounter, FaultHandler, Flag, Group, Perm, Response
from warp.iommu.mmu import STAGED, Iommu, Mapping, TranslationFault
from warp.sva import AddressSpace

PAGE = 4096
Bound = tuple[Iommu, Mapping, AddressSpace, np.ndarray]


@pytest.fixture
def bound() -> Iterator[Bound]:
    space = AddressSpace(64 * PAGE)
    counters = np.zeros(COUNTER_COLUMNS, dtype=np.uint64)
    iommu = Iommu(counters)
    mapping = iommu.bind(os.getpid(), space.heap_fd, space.pt_fd, space.base, space.size)
    yield iommu, mapping, space, counters
    iommu.unbind(mapping)
    iommu.faults.close()
    space.close()


@pytest.fixture
def groups(monkeypatch: pytest.MonkeyPatch) -> list[Group]:
    """Every group the fault handler services, in order."""
    seen: list[Group] = []
    service = FaultHandler._service

    def record(self: FaultHandler, group: Group) -> None:
        seen.append(group)
        service(self, group)

    monkeypatch.setattr(FaultHandler, "_service", record)
    return seen


def count(counters: np.ndarray, column: FaultCounter) -> int:
    return int(counters[column])


def test_warm_windows_take_the_fast_path(bound: Bound) -> None:
    iommu, mapping, space, counters = bound
    space.prefault(0, 16 * PAGE)  # the CPU wrote them: present, accessed, dirty
    assert iommu.translate_job(mapping, space.address(100), 3 * PAGE, space.address(8 * PAGE), 4 * PAGE) \
        == (100, 8 * PAGE, 0)
    assert count(counters, FaultCounter.REQUESTS) == 0


def test_a_cold_source_faults_one_page_per_request_in_access_order(bound: Bound, groups: list[Group]) -> None:
    """The walk stalls at each missing page: one group of one page each, LAST_PAGE set (the
    SMMU stall model), in address order; pages already present are not requested."""
    iommu, mapping, space, counters = bound
    space.prefault(2 * PAGE, PAGE)
    space.prefault(8 * PAGE, 2 * PAGE)  # the destination, settled
    assert iommu.translate_job(mapping, space.address(10), 4 * PAGE, space.address(8 * PAGE), 2 * PAGE) \
        == (10, 8 * PAGE, 4)  # pages 0, 1, 3 and 4; page 2 was present
    assert [[f.addr for f in g.faults] for g in groups] == [[space.address(p * PAGE)] for p in (0, 1, 3, 4)]
    assert all(g.faults[0].flags == Flag.PASID_VALID | Flag.LAST_PAGE and g.faults[0].perm is Perm.READ
               for g in groups)
    assert count(counters, FaultCounter.REQUESTS) == count(counters, FaultCounter.PAGES_OK) == 4
    assert pagetable.settled(space.page_table, 10, 4 * PAGE, write=False)


def test_a_cold_destination_is_staged_and_only_the_pages_written_fault(bound: Bound) -> None:
    iommu, mapping, space, counters = bound
    space.prefault(0, PAGE)
    source, target, faults = iommu.translate_job(mapping, space.address(0), PAGE, space.address(8 * PAGE), 8 * PAGE)
    assert (source, target, faults) == (0, STAGED, 0)
    out = np.frombuffer(os.urandom(2 * PAGE + 5), dtype=np.uint8)
    assert iommu.store(mapping, space.address(8 * PAGE), out) == 3  # pages 8, 9, 10 of the 8 available
    assert bytes(space.view[8 * PAGE:10 * PAGE + 5]) == out.tobytes()
    assert pagetable.missing_pages(space.page_table, 8 * PAGE, 8 * PAGE, write=True) == [11, 12, 13, 14, 15]
    assert count(counters, FaultCounter.PAGES_OK) == 3


def test_a_write_protected_page_in_a_writable_vma_succeeds(bound: Bound) -> None:
    """Copy-on-write (or a page the device only read): present, PTE read-only, VMA writable —
    the write faults, the handler makes the PTE writable, the job goes on."""
    iommu, mapping, space, counters = bound
    pagetable.populate(space.page_table, 0, 2 * PAGE, write=False)  # present, not writable
    assert pagetable.missing_pages(space.page_table, 0, 2 * PAGE, write=True) == [0, 1]
    assert iommu.store(mapping, space.address(0), np.full(2 * PAGE, 7, dtype=np.uint8)) == 2
    assert count(counters, FaultCounter.PAGES_INVALID) == 0
    assert pagetable.settled(space.page_table, 0, 2 * PAGE, write=True)
    assert bytes(space.view[:2 * PAGE]) == b"\x07" * 2 * PAGE


def test_a_write_into_a_read_only_vma_aborts_mid_job(bound: Bound, groups: list[Group]) -> None:
    """mprotect(PROT_READ) on the third page: the pages before it are written, the job stops
    there with INVALID, the page after it is never requested."""
    iommu, mapping, space, counters = bound
    space.protect(10 * PAGE, PAGE)
    data = np.full(4 * PAGE, 9, dtype=np.uint8)
    with pytest.raises(TranslationFault) as aborted:
        iommu.store(mapping, space.address(8 * PAGE), data)
    assert aborted.value.response is Response.INVALID and aborted.value.pages == 3
    assert [g.faults[0].addr for g in groups] == [space.address(p * PAGE) for p in (8, 9, 10)]
    assert groups[-1].faults[0].perm is Perm.WRITE
    assert bytes(space.view[8 * PAGE:10 * PAGE]) == b"\x09" * 2 * PAGE
    assert not any(space.view[10 * PAGE:12 * PAGE])
    assert (count(counters, FaultCounter.PAGES_OK), count(counters, FaultCounter.PAGES_INVALID)) == (2, 1)


def test_windows_outside_the_heap_fault_invalid(bound: Bound) -> None:
    """The walk faults in what lies inside the mapping and fails at the first page past it."""
    iommu, mapping, space, counters = bound
    space.prefault(0, 64 * PAGE)
    _, target, _ = iommu.translate_job(mapping, space.address(0), PAGE, space.address(63 * PAGE), 2 * PAGE)
    assert target == STAGED  # the destination runs past the end of the heap
    with pytest.raises(TranslationFault) as past:
        iommu.store(mapping, space.address(63 * PAGE), np.full(2 * PAGE, 1, dtype=np.uint8))
    assert past.value.pages == 1 and bytes(space.view[63 * PAGE:]) == b"\x01" * PAGE
    with pytest.raises(TranslationFault):
        iommu.translate_job(mapping, space.base - PAGE, PAGE, space.address(0), PAGE)
    assert count(counters, FaultCounter.PAGES_INVALID) == 2


class Resolver:
    """Answers INVALID for one address, SUCCESS for the others, and remembers what it was asked."""

    def __init__(self, bad: int) -> None:
        self.bad = bad
        self.asked: list[int] = []

    def handle_mm_fault(self, pasid: int, addr: int, perm: Perm) -> Response:
        self.asked.append(addr)
        return Response.INVALID if addr == self.bad else Response.SUCCESS


def test_a_group_stops_at_its_first_failure(groups: list[Group]) -> None:
    """io-pgfault's iopf_handler: a PRI group's pages are handled in order until one fails; the
    rest are not handled and the whole group is answered with the failure."""
    counters = np.zeros(COUNTER_COLUMNS, dtype=np.uint64)
    resolver = Resolver(bad=2 * PAGE)
    handler = FaultHandler(resolver, counters)
    try:
        assert handler.fault(1, [PAGE, 2 * PAGE, 3 * PAGE], Perm.READ) is Response.INVALID
        assert resolver.asked == [PAGE, 2 * PAGE]
        assert [f.flags for f in groups[0].faults] == [Flag.PASID_VALID, Flag.PASID_VALID,
                                                        Flag.PASID_VALID | Flag.LAST_PAGE]
        assert handler.fault(1, [4 * PAGE, 5 * PAGE], Perm.READ) is Response.SUCCESS
    finally:
        handler.close()
    assert (count(counters, FaultCounter.REQUESTS), count(counters, FaultCounter.PAGES_OK),
            count(counters, FaultCounter.PAGES_INVALID)) == (2, 3, 1)
