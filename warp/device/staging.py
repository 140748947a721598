"""An engine's output to a destination it cannot write yet, written out as the hardware does.

The hardware writes its output as it goes and stalls at each page it cannot write (an I/O page
fault per page). A zstd call here writes its whole output at once, so the output goes into the
engine's own buffer first and :meth:`~warp.iommu.mmu.Iommu.store` writes it out page by page: only
the pages the output reaches fault, and an abort leaves the pages before the failing one written,
as a stalled transaction that is aborted does. Whole-frame jobs (:mod:`warp.device.engine`) and
stream BDs (:mod:`warp.device.streams`) both go through it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from warp import codec
from warp.iommu.mmu import Iommu, Mapping

#: What the kernel of a job returns; its last element is the bytes it produced.
R = TypeVar("R", bound=tuple[Any, ...])


def staged(iommu: Iommu, mapping: Mapping, dst: int, capacity: int, run: Callable[[codec.Pointer], R]) -> tuple[R, int]:
    """``run`` into a buffer of ``capacity`` bytes, then its output stored at ``dst``: ``(run's
    result, pages faulted)``. Raises :class:`~warp.iommu.mmu.TranslationFault` where a page may
    not be written."""
    out = np.empty(max(capacity, 1), dtype=np.uint8)
    pointer = codec.pointer(out)
    try:
        result = run(pointer)
    finally:
        codec.release(pointer)
    return result, iommu.store(mapping, dst, out[:result[-1]])
