"""The SVA heap allocator: size classes, pool reuse, prefault, bounds."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from warp.buddy import order_of
from warp.errors import HeapExhausted
from warp.iommu import pagetable
from warp.mem import SvaHeap
from warp.sva import AddressSpace


@pytest.fixture
def space() -> Iterator[AddressSpace]:
    s = AddressSpace(1 << 20)
    yield s
    s.close()


def test_orders() -> None:
    assert order_of(0) == 12
    assert order_of(4096) == 12
    assert order_of(4097) == 13
    assert order_of(1 << 20) == 20


def test_pool_reuses_warm_blocks_and_counts(space: AddressSpace) -> None:
    heap = SvaHeap(space)
    a = heap.alloc(5000)
    assert a.capacity == 8192 and a.address == space.base + a.offset and a.offset % 8192 == 0
    a.release()
    a.release()  # idempotent
    b = heap.alloc(6000)
    assert b.offset == a.offset
    stats = heap.statistics()
    assert (stats.hits, stats.misses, stats.in_use_bytes) == (1, 1, 8192)
    b.release()
    assert heap.statistics().in_use_bytes == 0


def test_buddies_merge_so_the_largest_block_comes_back(space: AddressSpace) -> None:
    heap = SvaHeap(space)
    small = [heap.alloc(4096) for _ in range(256)]  # the whole 1 MiB heap in pages
    with pytest.raises(HeapExhausted):
        heap.alloc(8192)
    for buf in small[::2]:
        buf.release()
    with pytest.raises(HeapExhausted):
        heap.alloc(8192)  # half free, but no two free buddies: still fragmented
    for buf in small[1::2]:
        buf.release()
    big = heap.alloc(1 << 20)
    assert big.offset == 0 and big.capacity == 1 << 20


def test_odd_heap_sizes_are_covered_by_aligned_blocks() -> None:
    space = AddressSpace(3 * 4096 + (1 << 16))
    heap = SvaHeap(space)
    got = sorted(heap.alloc(4096).offset for _ in range(3 + 16))
    assert got == [i * 4096 for i in range(19)]
    with pytest.raises(HeapExhausted):
        heap.alloc(4096)


def test_reclaimed_pages_are_prefaulted_again(space: AddressSpace) -> None:
    heap = SvaHeap(space)
    heap.alloc(4096).release()
    space.reclaim(0, space.size)
    buf = heap.alloc(4096)
    assert pagetable.missing_pages(space.page_table, buf.offset, 4096, write=True) == []
    assert heap.statistics().misses == 2


def test_prefault_marks_new_blocks_present(space: AddressSpace) -> None:
    buf = SvaHeap(space, prefault=True).alloc(3 * 4096)
    assert pagetable.missing_pages(space.page_table, buf.offset, buf.capacity, write=True) == []
    cold = SvaHeap(AddressSpace(1 << 16), prefault=False).alloc(4096)
    assert len(pagetable.missing_pages(cold.heap.space.page_table, cold.offset, 4096, write=False)) == 1
    cold.heap.space.close()


def test_exhaustion_is_an_error_not_growth(space: AddressSpace) -> None:
    heap = SvaHeap(space)
    held = [heap.alloc(256 << 10) for _ in range(4)]
    with pytest.raises(HeapExhausted):
        heap.alloc(4096)
    assert heap.statistics().exhausted == 1
    held[0].release()
    heap.alloc(200 << 10)  # the freed block serves it


def test_write_bounds(space: AddressSpace) -> None:
    buf = SvaHeap(space).alloc(4096)
    with pytest.raises(ValueError):
        buf.write(4000, b"x" * 200)


def test_an_idle_heap_serves_its_largest_blocks_again() -> None:
    """The service's guarantee: an idle worker fits one max-size request (input + 2x output)."""
    space = AddressSpace(3 << 20)
    heap = SvaHeap(space)
    held = [heap.alloc(1 << 20) for _ in range(3)]  # splits the 2 MiB block
    for buf in held:
        buf.release()
    src = heap.alloc(1 << 20)
    dst = heap.alloc(2 << 20)
    assert {src.capacity, dst.capacity} == {1 << 20, 2 << 20}
    space.close()
