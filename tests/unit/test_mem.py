"""The SVA heap allocator: size classes, pool reuse, prefault, bounds."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from warp.errors import HeapExhausted
from warp.iommu import pagetable
from warp.iommu.space import AddressSpace
from warp.mem import SvaHeap


@pytest.fixture
def space() -> Iterator[AddressSpace]:
    s = AddressSpace(1 << 20)
    yield s
    s.close()


def test_size_classes() -> None:
    assert SvaHeap.size_class(0) == 12
    assert SvaHeap.size_class(4096) == 12
    assert SvaHeap.size_class(4097) == 13
    assert SvaHeap.size_class(1 << 20) == 20


def test_pool_reuses_blocks_and_counts(space: AddressSpace) -> None:
    heap = SvaHeap(space)
    a = heap.alloc(5000)
    assert a.capacity == 8192 and a.address == space.base + a.offset
    a.release()
    a.release()  # idempotent
    b = heap.alloc(6000)
    assert b.offset == a.offset
    stats = heap.statistics()
    assert (stats.hits, stats.misses, stats.in_use_bytes) == (1, 1, 8192)
    b.release()
    assert heap.statistics().in_use_bytes == 0


def test_prefault_marks_new_blocks_present(space: AddressSpace) -> None:
    buf = SvaHeap(space, prefault=True).alloc(3 * 4096)
    assert pagetable.missing_pages(space.page_table, buf.offset, buf.capacity, write=True).size == 0
    cold = SvaHeap(AddressSpace(1 << 16), prefault=False).alloc(4096)
    assert pagetable.missing_pages(cold.heap.space.page_table, cold.offset, 4096, write=False).size == 1
    cold.heap.space.close()


def test_exhaustion_is_an_error_not_growth(space: AddressSpace) -> None:
    heap = SvaHeap(space)
    held = [heap.alloc(256 << 10) for _ in range(4)]
    with pytest.raises(HeapExhausted):
        heap.alloc(4096)
    assert heap.statistics().exhausted == 1
    held[0].release()
    heap.alloc(200 << 10)  # the freed block of the same class serves it


def test_write_bounds(space: AddressSpace) -> None:
    buf = SvaHeap(space).alloc(4096)
    with pytest.raises(ValueError):
        buf.write(4000, b"x" * 200)
