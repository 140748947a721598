"""How request bodies use the SVA heap: the size of a body's first buffer, how it grows, how much
bodies still arriving may hold together, and which heap sizes always fit one ``--max-body`` request.

Sans-I/O: both ways a body reaches the heap — the data path (:mod:`app.datapath`) and aiohttp's
handlers (:mod:`app.api.body`) — size their buffers with these rules, and the configuration check
replays the same rules on a :class:`~warp.buddy.Buddy` to prove a heap size before any memory
exists (issue 15, item 9: ``--max-body 3145728 --heap-size 7340032`` passed a sum-of-sizes check,
yet the buddy's power-of-two blocks and the doubling of chunked bodies left an idle worker unable
to serve a 3 MiB body).
"""
from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Final, final

from warp import abi, lz77
from warp.buddy import Buddy, order_of
from warp.codec import compress_bound

GROW_FROM: Final = 64 << 10
"""First buffer of a body that grows as it arrives: a chunked body (its length is unknown), or
one whose bytes are still to come while other waiting bodies already hold :attr:`Bodies.budget`."""


def grown(capacity: int, needed: int, limit: int) -> int:
    """The next buffer size of a body that needs ``needed`` bytes in a ``capacity`` buffer: double
    it (an honest client keeps sending, so the copies add up to less than the body; a hoarder that
    stops holds what it sent, not what it declared), never past ``limit`` (the declared length, or
    ``--max-body`` for a chunked body)."""
    return min(max(needed, 2 * capacity), limit)


@final
class Bodies:
    """What the bodies still arriving in one worker hold of its heap (issue 15, item 7).

    A body that waits alone gets its declared length at once; once waiting bodies hold a quarter of
    the heap, a new one starts at :data:`GROW_FROM` and grows as bytes come, so slow clients that
    declare the largest body cannot take the heap from honest small requests.
    """

    __slots__ = ("held", "budget")

    def __init__(self, heap_size: int) -> None:
        self.held = 0
        self.budget = heap_size // 4

    def first(self, declared: int, have: int) -> int:
        """Size of the first buffer for a body of ``declared`` bytes of which ``have`` are here."""
        if have < declared and self.held and self.held + declared > self.budget:
            return max(have, GROW_FROM)
        return declared


def fits(heap_size: int, max_body: int) -> bool:
    """Whether an idle worker's heap serves every single request up to ``max_body`` bytes.

    Replays, on the allocator's own bookkeeping, the worst that one request asks: the body in one
    buffer of its length, or grown by doubling from :data:`GROW_FROM` (chunked), then the output
    (the compress bound, or ``max_body`` for a decompression), while the body is still held.
    """
    if heap_size <= 0 or heap_size % abi.PAGE_SIZE:
        return False
    for body in _sizes(max_body):
        output = max(compress_bound(body), max_body)
        for steps in (_whole(body), _chunked(body, max_body)):
            if not _replay(Buddy(heap_size), steps, output):
                return False
    return True


def smallest_heap(max_body: int) -> int:
    """The smallest page multiple for which :func:`fits` holds: the number to suggest."""
    low = max(1, 2 * max_body // abi.PAGE_SIZE)
    high = low
    while not fits(high * abi.PAGE_SIZE, max_body):
        high *= 2
    while low < high:  # fits is monotonic in the heap size (see tests/unit/test_budget.py)
        mid = (low + high) // 2
        if fits(mid * abi.PAGE_SIZE, max_body):
            high = mid
        else:
            low = mid + 1
    return high * abi.PAGE_SIZE


def lz77_fits(heap_size: int, body: int) -> bool:
    """Whether an idle heap holds an lz77_zstd job on ``body`` bytes: the body's buffer and, beside
    it, every BD's flat output (literals, seqDefs, overflow, freq: ~3.7x its input), all at once,
    since the BDs go under one doorbell and the frame is built from all of them."""
    blocks = Buddy(heap_size)
    return all(blocks.take(order_of(size)) is not None
               for size in (body, *(lz77.output_size(piece) for _at, piece in lz77.bds(body))))


@functools.cache
def largest_lz77_body(heap_size: int, limit: int) -> int:
    """The largest body up to ``limit`` for which :func:`lz77_fits` holds (0 if none): what the
    413 for a larger one names. Cached: it depends only on the configuration."""
    low, high = 0, limit
    while low < high:  # lz77_fits is monotonic in the body: a longer one asks for more and larger blocks
        mid = (low + high + 1) // 2
        if lz77_fits(heap_size, mid):
            low = mid
        else:
            high = mid - 1
    return low


def _sizes(max_body: int) -> Iterator[int]:
    """Body lengths that start a new buffer size: one past each power of two, and the limit."""
    size = GROW_FROM
    while size < max_body:
        yield size + 1
        size *= 2
    yield max_body


def _whole(body: int) -> list[int]:
    return [body]


def _chunked(body: int, max_body: int) -> list[int]:
    sizes = [GROW_FROM]
    while sizes[-1] < body:
        sizes.append(grown(sizes[-1], sizes[-1] + 1, max_body))
    return sizes


def _replay(blocks: Buddy, steps: list[int], output: int) -> bool:
    """Allocate each step while the previous one is held (a copy), then the output beside the last."""
    held: tuple[int, int] | None = None
    for size in steps:
        order = order_of(size)
        offset = blocks.take(order)
        if offset is None:
            return False
        if held is not None:
            blocks.give(*held)
        held = (offset, order)
    return blocks.take(order_of(output)) is not None
