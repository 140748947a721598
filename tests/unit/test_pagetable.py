"""Page-table bits and the CPU side of SVA (populate, prefault, reclaim, protect)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from warp.iommu import pagetable
from warp.sva import AddressSpace


@pytest.fixture
def space() -> Iterator[AddressSpace]:
    s = AddressSpace(64 * 4096)
    yield s
    s.close()


def test_fresh_space_has_nothing_present(space: AddressSpace) -> None:
    assert len(pagetable.missing_pages(space.page_table, 0, space.size, write=False)) == 64
    assert space.base != 0


def test_cpu_write_populates_exactly_the_touched_pages(space: AddressSpace) -> None:
    space.write(4096 + 10, b"x" * 5000)  # pages 1 and 2
    missing = set(pagetable.missing_pages(space.page_table, 0, 4 * 4096, write=True))
    assert missing == {0, 3}
    assert bytes(space.view[4096 + 10:4096 + 15]) == b"xxxxx"


def test_reclaim_then_refault(space: AddressSpace) -> None:
    space.prefault(0, 8 * 4096)
    assert pagetable.missing_pages(space.page_table, 0, 8 * 4096, write=True) == []
    assert space.reclaim(0, 4 * 4096) == 4
    assert pagetable.missing_pages(space.page_table, 0, 8 * 4096, write=False) == [0, 1, 2, 3]


def test_protect_makes_writes_fault_but_not_reads(space: AddressSpace) -> None:
    space.prefault(0, 4096)
    space.protect(0, 4096)
    assert pagetable.missing_pages(space.page_table, 0, 10, write=False) == []
    assert pagetable.missing_pages(space.page_table, 0, 10, write=True) == [0]


def test_page_span_edges() -> None:
    assert pagetable.page_span(0, 4096) == (0, 1)
    assert pagetable.page_span(4095, 2) == (0, 2)
    assert pagetable.page_span(8192, 0) == (2, 3)


def test_heap_size_must_be_pages() -> None:
    with pytest.raises(ValueError):
        AddressSpace(1000)


def test_small_and_large_spans_agree(space: AddressSpace) -> None:
    """The entry-by-entry path and the numpy path must give the same answers."""
    space.prefault(0, 64 * 4096)
    space.reclaim(3 * 4096, 4096)
    space.reclaim(40 * 4096, 2 * 4096)
    small = pagetable.missing_pages(space.page_table, 0, pagetable.SMALL_SPAN * 4096, write=False)
    large = pagetable.missing_pages(space.page_table, 0, 64 * 4096, write=False)
    assert small == [3] and large == [3, 40, 41]
    pagetable.populate(space.page_table, 0, 64 * 4096, write=False)
    assert pagetable.missing_pages(space.page_table, 0, 64 * 4096, write=False) == []


@pytest.mark.parametrize("length", [1, 4096, 3 * 4096 + 1, 40 * 4096])  # both sides of SMALL_SPAN
def test_settled_means_the_walk_would_change_nothing(space: AddressSpace, length: int) -> None:
    """The translation fast path: true only when an access finds every page present with its
    accessed (and, for a write, dirty) bit already set — the walk would neither fault nor mark."""
    table, offset = space.page_table, 4096 + 7
    assert not pagetable.settled(table, offset, length, write=False)
    pagetable.populate(table, offset, length, write=False)  # a read walk: present + accessed
    assert pagetable.settled(table, offset, length, write=False)
    assert not pagetable.settled(table, offset, length, write=True), "not dirty yet: a write still marks"
    pagetable.populate(table, offset, length, write=True)
    assert pagetable.settled(table, offset, length, write=True)
    assert not pagetable.settled(table, offset - 4096, length, write=False), "one page further is untouched"
    space.protect(offset, length)
    assert pagetable.settled(table, offset, length, write=False)
    assert not pagetable.settled(table, offset, length, write=True)
    space.reclaim(offset + length - 1, 1)  # the last page of the span goes
    assert not pagetable.settled(table, offset, length, write=False)
