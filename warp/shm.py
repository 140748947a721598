"""Helpers for the shared-memory mappings every layer uses."""

from __future__ import annotations

import mmap


def unmap(mapping: mmap.mmap) -> bool:
    """Unmap now if nothing exports the memory; otherwise leave it to the last view's release.

    Views (numpy arrays, memoryviews, buffers handed out by the heap) keep a mapping exported.
    Closing it under them is impossible (BufferError) and would be a use-after-unmap if it were
    not, so the mapping then stays until they are gone. Returns whether it was unmapped now.
    """
    try:
        mapping.close()
    except BufferError:
        return False
    return True
