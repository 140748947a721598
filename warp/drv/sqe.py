"""The SQE of a job as the ``zip`` driver writes it: the words of every job, then those of an
lz77_zstd BD, a dictionary or a stream BD (UADK's ``fill_buf``/``fill_sqe`` in ``hisi_comp.c``).
Sans I/O: it writes words into the mapped SQ; :mod:`warp.drv.zip` owns the ring.

The hot path — a plain zstd job — stops after the common words. Words are plain ints here, as in
:mod:`warp.device.engine`: ``abi.W.TAG`` is two lookups and an IntEnum, whose arithmetic is slower
than an int's.
"""

from __future__ import annotations

from typing import Final

from warp import abi, lz77
from warp.dictionary import Dictionary
from warp.drv.base import Job

SQ_WORDS: Final = abi.SQ_WORDS
CONSUMED: Final = int(abi.W.CONSUMED)
PRODUCED: Final = int(abi.W.PRODUCED)
LIT_NUM: Final = int(abi.W.LIT_NUM)
STATUS: Final = int(abi.W.STATUS)
_INPUT_LEN: Final = int(abi.W.INPUT_LEN)
_STREAM: Final = int(abi.W.STREAM)
_REQ_TYPE: Final = int(abi.W.REQ_TYPE)
_LEVEL: Final = int(abi.W.LEVEL)
_FLAGS: Final = int(abi.W.FLAGS)
_DEST_AVAIL: Final = int(abi.W.DEST_AVAIL)
_SRC_LO: Final = int(abi.W.SRC_LO)
_SRC_HI: Final = int(abi.W.SRC_HI)
_DST_LO: Final = int(abi.W.DST_LO)
_DST_HI: Final = int(abi.W.DST_HI)
TAG: Final = int(abi.W.TAG)
LIT_OVERFLOW: Final = int(abi.W.LIT_OVERFLOW)
_CHECKSUM: Final = abi.FLAG_CHECKSUM
ZSTD: Final = abi.Alg.ZSTD
PROGRESS: Final = abi.STREAM_PROGRESS
_ZSTD_CODE: Final = int(abi.Alg.ZSTD)


def write(w: memoryview, slot: int, job: Job, tag: int) -> None:
    """The SQE of ``job``: the words every job has, then those of lz77_zstd, a dictionary or a
    stream BD when it is one of those (a plain zstd job, the hot path, stops before)."""
    base = slot * SQ_WORDS
    w[base + CONSUMED] = 0
    w[base + PRODUCED] = 0
    w[base + STATUS] = 0
    w[base + _INPUT_LEN] = job.length
    w[base + _LEVEL] = job.level & 0xFFFFFFFF  # two's complement (abi.level_to_word)
    w[base + _FLAGS] = _CHECKSUM if job.checksum else 0
    src = job.src.address
    w[base + _SRC_LO] = src & 0xFFFFFFFF
    w[base + _SRC_HI] = src >> 32
    w[base + _STREAM] = job.mode
    w[base + TAG] = tag
    if job.algorithm is ZSTD and job.dictionary is None and not job.mode:
        dst = job.dst.address
        w[base + _REQ_TYPE] = _ZSTD_CODE
        w[base + _DEST_AVAIL] = job.dst.capacity
        w[base + _DST_LO] = dst & 0xFFFFFFFF
        w[base + _DST_HI] = dst >> 32
        return
    _write_extras(w, base, job)


def _write_extras(w: memoryview, base: int, job: Job) -> None:
    """The words of an lz77_zstd BD (literals first, the sequence area after them), a dictionary
    and a stream BD's ctx_buf, with the destination they shape."""
    dst, avail = job.dst.address, job.dst.capacity
    w[base + _REQ_TYPE] = job.algorithm | job.window << abi.WINDOW_SHIFT
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
    w[base + _DEST_AVAIL] = avail
    w[base + _DST_LO] = dst & 0xFFFFFFFF
    w[base + _DST_HI] = dst >> 32


def _name_dictionary(w: memoryview, base: int, dictionary: Dictionary) -> None:
    """The dictionary words of an SQE (this model's own, see :mod:`warp.dictionary`)."""
    w[base + abi.W.FLAGS] |= abi.FLAG_DICT
    w[base + abi.W.DICT_LEN] = dictionary.length
    w[base + abi.W.DICT_LO] = dictionary.address & 0xFFFFFFFF
    w[base + abi.W.DICT_HI] = dictionary.address >> 32
