"""The dictionaries an engine has loaded: the device half of ``FLAG_DICT`` (see :mod:`warp.dictionary`).

ZIP has no dictionaries; these words are this model's own. A job with ``FLAG_DICT`` names a zstd
dictionary in the user's heap (``DICT_HI:DICT_LO``, ``DICT_LEN`` bytes). The engine reads it through
the IOMMU like a source buffer — faulting its pages in if it must — and digests it into a
``ZSTD_CDict`` (at the job's level) or a ``ZSTD_DDict``, which it keeps, as hardware keeps a
context it fetched: the next job that names the same dictionary of the same context (PASID and
heap) costs nothing more, and ``Engine.DICT_LOADS`` counts the loads. The id the dictionary declares
is part of the key, so a new dictionary at an address the library freed and reused is not
confused with the old one.
"""

from __future__ import annotations

from typing import Any, Final, final

from warp import abi, codec
from warp.device.qp import Qp
from warp.dfx import Engine
from warp.dictcache import LoadedDictionaries
from warp.iommu.mmu import Iommu

_LEN: Final = int(abi.W.DICT_LEN)
_LO: Final = int(abi.W.DICT_LO)
_HI: Final = int(abi.W.DICT_HI)
#: Largest dictionary an engine loads (zstd's own dictionaries are ~100 KiB; a bigger one is a bad SQE).
MAX_DICT_BYTES: Final = 16 << 20


def named(w: memoryview, base: int) -> tuple[int, int] | None:
    """``(address, length)`` of the dictionary the SQE at ``base`` names; None for a length of 0 or
    over :data:`MAX_DICT_BYTES` (a bad SQE)."""
    length = w[base + _LEN]
    if not 0 < length <= MAX_DICT_BYTES:
        return None
    return w[base + _LO] | w[base + _HI] << 32, length


@final
class EngineDictionaries:
    """One engine's loaded dictionaries and its ``DICT_LOADS`` counter."""

    def __init__(self, iommu: Iommu, counters: memoryview) -> None:
        self._iommu = iommu
        self._counters = counters
        self._loaded = LoadedDictionaries()

    def load(self, qp: Qp, w: memoryview, base: int, level: int) -> tuple[Any, int]:
        """The dictionary the SQE at ``base`` names, loaded for the queue's direction: ``(loaded,
        pages faulted)``; None for a length of 0 or over :data:`MAX_DICT_BYTES` (a bad SQE).
        Raises :class:`~warp.iommu.mmu.TranslationFault` if the engine may not read it."""
        words = named(w, base)
        if words is None:
            return None, 0
        address, length = words
        mapping, direction = qp.mapping, qp.qc_type
        offset = address - mapping.base
        # The tag: the id a zstd dictionary declares in bytes 4..7 (read unchecked; a miss faults properly).
        tag = mapping.heap[offset + 4:offset + 8] if 0 <= offset and offset + 8 <= mapping.size else b""
        key = (mapping.pasid, mapping.key, address, length, tag, direction,
               level if direction is abi.QcType.COMPRESS else 0)
        loaded = self._loaded.find(key)
        if loaded is not None:
            return loaded, 0
        faults = self._iommu.fault_in(mapping, address, length, write=False)
        loaded = codec.load_dictionary(mapping.memory[offset:offset + length], direction, level)
        self._counters[Engine.DICT_LOADS] += 1
        return self._loaded.keep(key, loaded), faults
