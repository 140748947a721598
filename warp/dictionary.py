"""Trained zstd dictionaries as sessions name them: the bytes, once, in the SVA heap.

The device reads a dictionary as it reads a source buffer — through the IOMMU, at the address in
the SQE (``FLAG_DICT``, ``DICT_LO/HI``, ``DICT_LEN``: this model's own words, ZIP has no
dictionaries) — and keeps what it loaded per engine and context, so the bytes are copied into the
heap once (:meth:`warp.runtime.Runtime.dictionary`) and every job names the same buffer. Small
bodies of one kind (JSON events, log lines) compress 2-5x better with one.

A :class:`Dictionary` must outlive the jobs that name it: :meth:`close` returns its buffer to the
heap, where the next allocation may reuse the address. Engines tag what they loaded with the
dictionary's id as well as its address, so a different dictionary at a reused address is loaded
afresh rather than confused with the old one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import final

from warp import codec
from warp.mem import Buffer

#: What a decompressor asks for a frame's dictionary: the dictionary with that id, or None.
Resolver = Callable[[int], "Dictionary | None"]


@final
class Dictionary:
    """A zstd dictionary in the SVA heap; ``dict_id`` is the id it declares (0 for raw content)."""

    __slots__ = ("buffer", "length", "address", "dict_id")

    def __init__(self, buffer: Buffer, length: int) -> None:
        self.buffer = buffer
        self.length = length
        self.address = buffer.address
        self.dict_id = codec.dictionary_id(buffer.view[:length])

    @property
    def view(self) -> memoryview:
        return self.buffer.view[:self.length]

    def close(self) -> None:
        """Give the buffer back (safe twice); no job may name the dictionary afterwards."""
        self.buffer.release()

    def __repr__(self) -> str:
        return f"Dictionary(id={self.dict_id}, {self.length} bytes at {self.address:#x})"
