"""The engine's lz77_zstd BD (``HW_LZ77_ZSTD`` 0x43, ``HW_LZ77_ZSTD_PRICE`` 0x42): read the SQE,
run the LZ77 pass (:class:`warp.lz77.Lz77`), write literals and sequence area where dw24/25 and
dw20/21 point, and the counts into dw2 and dw31 (the engine writes dw0, dw1 and dw3).

Outputs go through :meth:`Iommu.store`, so a destination page the engine cannot write yet is an
I/O page fault there, and an unmapped one aborts the BD, as for whole zstd frames.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from warp import abi, lz77
from warp.codec import ffi
from warp.device.qp import Qp
from warp.iommu.mmu import Iommu, TranslationFault

_W: Final = abi.W
_ALGORITHMS: Final = frozenset(int(alg) for alg in lz77.ALGORITHM.values())


def execute(iommu: Iommu, qp: Qp, w: memoryview, base: int) -> tuple[int, int, int, int]:
    """Run the SQE at word ``base`` if it is an lz77_zstd one: ``(status, consumed, produced =
    sequences, faults)``; any other algorithm this engine does not know is ``BAD_ALG``."""
    alg = w[base + _W.REQ_TYPE] & 0xFF
    if alg not in _ALGORITHMS:
        return abi.Status.BAD_ALG, 0, 0, 0
    length = w[base + _W.INPUT_LEN]
    lits_size = w[base + _W.LIT_SIZE]
    window = (w[base + _W.REQ_TYPE] >> abi.WINDOW_SHIFT) & 0xF
    refused = lz77.refusal(alg, length, w[base + _W.LEVEL], window, lits_size)
    if refused is not None:
        return refused, 0, 0, 0
    src = w[base + _W.SRC_LO] | w[base + _W.SRC_HI] << 32
    lits = w[base + _W.LIT_LO] | w[base + _W.LIT_HI] << 32
    dst = w[base + _W.DST_LO] | w[base + _W.DST_HI] << 32
    try:
        source, _target, faults = iommu.translate_job(qp.mapping, src, length, lits, lits_size)
    except TranslationFault as fault:
        return abi.Status.ADDR_FAULT, 0, 0, fault.pages
    data = np.frombuffer(ffi.buffer(qp.memory + source, length), dtype=np.uint8) if length else np.empty(0, np.uint8)
    done = lz77.this_thread().run(qp.memory + source, data, w[base + _W.LEVEL], window)
    if len(done.area) > w[base + _W.DEST_AVAIL]:
        return abi.Status.DST_TOO_SMALL, 0, 0, faults  # ERR_DSTLEN_OUT: the sequences do not fit
    try:
        faults += iommu.store(qp.mapping, lits, done.literals)
        faults += iommu.store(qp.mapping, dst, done.area)
    except TranslationFault as fault:
        return abi.Status.ADDR_FAULT, 0, 0, faults + fault.pages
    w[base + _W.LIT_NUM] = len(done.literals)
    w[base + _W.LIT_OVERFLOW] = done.overflow
    return abi.Status.OK, length, done.sequences, faults
