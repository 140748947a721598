"""The SQE words (:class:`warp.abi.W`) and the flags the hot paths test, as plain ints.

The ``zip`` driver writes a job's SQE (:mod:`warp.drv.sqe`) and reads its CQE words
(:mod:`warp.drv.zip`); the engines read the SQE and write the results back
(:mod:`warp.device.engine`). Each does it for every job, and a module global holding an int is one
lookup where ``abi.W.CONSUMED`` is three — and an IntEnum's arithmetic is slower than an int's. One
list, so writer and reader cannot drift apart.
"""

from __future__ import annotations

from typing import Final

from warp import abi

SQ_WORDS: Final = abi.SQ_WORDS
CONSUMED: Final = int(abi.W.CONSUMED)
PRODUCED: Final = int(abi.W.PRODUCED)
LIT_NUM: Final = int(abi.W.LIT_NUM)
STATUS: Final = int(abi.W.STATUS)
INPUT_LEN: Final = int(abi.W.INPUT_LEN)
STREAM: Final = int(abi.W.STREAM)
REQ_TYPE: Final = int(abi.W.REQ_TYPE)
LEVEL: Final = int(abi.W.LEVEL)
FLAGS: Final = int(abi.W.FLAGS)
DEST_AVAIL: Final = int(abi.W.DEST_AVAIL)
SRC_LO: Final = int(abi.W.SRC_LO)
SRC_HI: Final = int(abi.W.SRC_HI)
DST_LO: Final = int(abi.W.DST_LO)
DST_HI: Final = int(abi.W.DST_HI)
TAG: Final = int(abi.W.TAG)
LIT_OVERFLOW: Final = int(abi.W.LIT_OVERFLOW)
#: ``REQ_TYPE`` of a plain zstd job.
ZSTD_CODE: Final = int(abi.Alg.ZSTD)
CHECKSUM: Final = abi.FLAG_CHECKSUM
DICT: Final = abi.FLAG_DICT
STATEFUL: Final = abi.STREAM_STATEFUL
#: The statuses of a stream BD that are progress, not failure.
PROGRESS: Final = abi.STREAM_PROGRESS
