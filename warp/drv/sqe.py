"""The SQE of a job as the ``zip`` driver writes it: the words of every job, then those of an
lz77_zstd BD, a dictionary or a stream BD (UADK's ``fill_buf``/``fill_sqe`` in ``hisi_comp.c``).
Sans I/O: it writes words into the mapped SQ; :mod:`warp.drv.zip` owns the ring.

The hot path — a plain zstd job — stops after the common words, indexed as plain ints
(:mod:`warp.words`).
"""

from __future__ import annotations

from typing import Final

from warp import abi, lz77
from warp.dictionary import Dictionary
from warp.drv.base import Job
from warp.words import (
    CHECKSUM,
    CONSUMED,
    DEST_AVAIL,
    DST_HI,
    DST_LO,
    FLAGS,
    INPUT_LEN,
    LEVEL,
    LIT_NUM,
    LIT_OVERFLOW,
    PRODUCED,
    REQ_TYPE,
    SQ_WORDS,
    SRC_HI,
    SRC_LO,
    STATUS,
    STREAM,
    TAG,
    ZSTD_CODE,
)

ZSTD: Final = abi.Alg.ZSTD


def write(w: memoryview, slot: int, job: Job, tag: int) -> None:
    """The SQE of ``job``: the words every job has, then those of lz77_zstd, a dictionary or a
    stream BD when it is one of those (a plain zstd job, the hot path, stops before)."""
    base = slot * SQ_WORDS
    w[base + CONSUMED] = 0
    w[base + PRODUCED] = 0
    w[base + STATUS] = 0
    w[base + INPUT_LEN] = job.length
    w[base + LEVEL] = job.level & 0xFFFFFFFF  # two's complement (abi.level_to_word)
    w[base + FLAGS] = CHECKSUM if job.checksum else 0
    src = job.src.address
    w[base + SRC_LO] = src & 0xFFFFFFFF
    w[base + SRC_HI] = src >> 32
    w[base + STREAM] = job.mode
    w[base + TAG] = tag
    if job.algorithm is ZSTD and job.dictionary is None and not job.mode:
        dst = job.dst.address
        w[base + REQ_TYPE] = ZSTD_CODE
        w[base + DEST_AVAIL] = job.dst.capacity
        w[base + DST_LO] = dst & 0xFFFFFFFF
        w[base + DST_HI] = dst >> 32
        return
    _write_extras(w, base, job)


def _write_extras(w: memoryview, base: int, job: Job) -> None:
    """The words of an lz77_zstd BD (literals first, the sequence area after them), a dictionary
    and a stream BD's ctx_buf, with the destination they shape."""
    dst, avail = job.dst.address, job.dst.capacity
    w[base + REQ_TYPE] = job.algorithm | job.window << abi.WINDOW_SHIFT
    if job.algorithm is not ZSTD:
        lits = lz77.literal_size(job.length)
        w[base + LIT_NUM] = w[base + LIT_OVERFLOW] = 0
        w[base + abi.W.LIT_SIZE] = lits
        w[base + abi.W.LIT_LO] = dst & 0xFFFFFFFF
        w[base + abi.W.LIT_HI] = dst >> 32
        dst, avail = dst + lits, avail - lits
    if job.dictionary is not None:
        _name_dictionary(w, base, job.dictionary)
    if job.ctx is not None:
        w[base + abi.W.CTX_LO] = job.ctx.address & 0xFFFFFFFF
        w[base + abi.W.CTX_HI] = job.ctx.address >> 32
    w[base + DEST_AVAIL] = avail
    w[base + DST_LO] = dst & 0xFFFFFFFF
    w[base + DST_HI] = dst >> 32


def _name_dictionary(w: memoryview, base: int, dictionary: Dictionary) -> None:
    """The dictionary words of an SQE (this model's own, see :mod:`warp.dictionary`)."""
    w[base + abi.W.FLAGS] |= abi.FLAG_DICT
    w[base + abi.W.DICT_LEN] = dictionary.length
    w[base + abi.W.DICT_LO] = dictionary.address & 0xFFFFFFFF
    w[base + abi.W.DICT_HI] = dictionary.address >> 32
