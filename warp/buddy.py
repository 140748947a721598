"""The block bookkeeping of the SVA heap: a sans-I/O buddy allocator over offsets.

Blocks are page-aligned powers of two. Freed blocks go onto their order's list unmerged, so the
steady state — the same sizes coming and going — is a list pop and append; only when no block of
the order or above is free are free buddies merged (bottom-up), and a heap with nothing in use
is reset to its largest blocks — so a heap that served a burst of small buffers can still serve
the largest one again. Merging eagerly on every free cost ~10 µs a request in a 1 GiB heap
(eighteen levels of split and merge for each 4 KiB buffer).

It knows nothing of memory or locks: :class:`~warp.mem.SvaHeap` wraps it with both, and the
server's configuration check replays its worst-case allocation patterns on one (``app.heapfit``)
to prove a heap size before any memory exists.
"""
from __future__ import annotations

from typing import Final, final

from warp import abi

MIN_ORDER: Final = abi.PAGE_SHIFT


def order_of(size: int) -> int:
    """The order of the smallest block that holds ``size`` bytes (a page at least). Written
    without ``max()``: this runs twice per buffer, and builtin calls are most of its cost."""
    order = (size - 1).bit_length() if size > 1 else 0
    return order if order > MIN_ORDER else MIN_ORDER


@final
class Buddy:
    """Free lists of a ``size``-byte heap; ``take``/``give`` hand out and return block offsets."""

    __slots__ = ("size", "max_order", "in_use", "_free", "_split")

    def __init__(self, size: int) -> None:
        if size <= 0 or size % abi.PAGE_SIZE:
            raise ValueError(f"heap size must be a positive multiple of {abi.PAGE_SIZE}")
        self.size = size
        self.in_use = 0
        self._free: dict[int, list[int]] = {}
        self._split = False  # a block was split since the lists were last pristine
        self._pristine()
        self.max_order = max(order for order, blocks in self._free.items() if blocks)

    def _pristine(self) -> None:
        """Free lists of an empty heap: the largest aligned blocks that cover it."""
        self._free = {order: [] for order in range(MIN_ORDER, self.size.bit_length())}
        offset = 0
        while offset < self.size:
            room = (self.size - offset).bit_length() - 1
            align = (offset & -offset).bit_length() - 1 if offset else room
            order = min(room, align)
            self._free[order].append(offset)
            offset += 1 << order
        self._split = False

    def take(self, order: int) -> int | None:
        """The offset of a free block of ``order``, or None when none is left even after merging."""
        offset = self._pop(order)
        if offset is None:
            self._coalesce()
            offset = self._pop(order)
        if offset is not None:
            self.in_use += 1 << order
        return offset

    def give(self, offset: int, order: int) -> None:
        """Return a block that :meth:`take` handed out."""
        self.in_use -= 1 << order
        self._free[order].append(offset)
        if not self.in_use and self._split:
            self._pristine()  # all merged at once: an idle heap serves its largest block again

    def _pop(self, order: int) -> int | None:
        """Pop a block of ``order``, splitting the smallest larger one if needed."""
        if order > self.max_order:
            return None
        blocks = self._free[order]
        if blocks:
            return blocks.pop()
        for have in range(order + 1, self.max_order + 1):
            larger = self._free[have]
            if larger:
                offset = larger.pop()
                self._split = True
                while have > order:  # keep the upper half of each split free
                    have -= 1
                    self._free[have].append(offset + (1 << have))
                return offset
        return None

    def _coalesce(self) -> None:
        """Merge every pair of free buddies, smallest order first."""
        for order in range(MIN_ORDER, self.max_order):
            free = set(self._free[order])
            size = 1 << order
            keep: list[int] = []
            merged = self._free[order + 1]
            for offset in sorted(free):
                if offset not in free:
                    continue  # already merged with its lower buddy
                buddy = offset ^ size
                if buddy in free:
                    free.discard(buddy)
                    merged.append(min(offset, buddy))
                else:
                    keep.append(offset)
                free.discard(offset)
            self._free[order] = keep
