"""Binary interface shared by the device and the library: ring geometry, SQE/CQE layouts, doorbells.

Everything here is a constant or a pure function so both processes agree on one definition.
Layouts follow the HiSilicon QM/ZIP formats in reference/uacce.md §2.3–§2.7: a 128-byte SQE of 32
little-endian u32 words, a 16-byte CQE whose bit 0 of ``w7`` is the phase, and 64-bit doorbell words.
Hot paths address SQE words through a flat ``uint32`` view (``SQ_WORDS`` columns), because per-field
access through a structured dtype costs microseconds per call.
"""

from __future__ import annotations

import enum
import mmap
import threading
from typing import Final

import numpy as np
import numpy.typing as npt

PAGE_SIZE: Final = 4096
PAGE_SHIFT: Final = 12

#: The QM version string UADK parses (`hisi_qm_setup_db`): v2 doorbells, no doorbell isolation.
API_VERSION: Final = "hisi_qm_v2"
DEV_FLAG_SVA: Final = 1 << 0

QUEUE_DEPTH: Final = 1024
SQE_SIZE: Final = 128
CQE_SIZE: Final = 16
SQ_WORDS: Final = SQE_SIZE // 4

#: SQ | CQ | padding to a page | one status page (TX/RX stop flags at the end), as qm_alloc_uacce.
DUS_SIZE: Final = ((PAGE_SIZE - 1 + SQE_SIZE * QUEUE_DEPTH + CQE_SIZE * QUEUE_DEPTH + PAGE_SIZE)
                   >> PAGE_SHIFT) << PAGE_SHIFT
SQ_OFFSET: Final = 0
CQ_OFFSET: Final = SQE_SIZE * QUEUE_DEPTH
TX_STOP_OFFSET: Final = DUS_SIZE - 4
RX_STOP_OFFSET: Final = DUS_SIZE - 8

#: One doorbell page plus the 0x1000 offset of the v2 SQ/CQ doorbell (QM_DOORBELL_SQ_CQ_BASE_V2).
DOORBELL_BASE: Final = 0x1000
MMIO_SIZE: Final = 2 * PAGE_SIZE


class Region(enum.IntEnum):
    """mmap regions selected by the page offset, as ``enum uacce_qfrt``."""

    MMIO = 0
    DUS = 1


REGION_SIZE: Final = {Region.MMIO: MMIO_SIZE, Region.DUS: DUS_SIZE}


class DoorbellCmd(enum.IntEnum):
    """QM_DOORBELL_CMD_*: what a doorbell word tells the device."""

    SQ = 0
    CQ = 1
    EQ = 2
    AEQ = 3


def doorbell_offset(cmd: DoorbellCmd) -> int:
    """Byte offset of the latch word for ``cmd`` in the MMIO region.

    Real MMIO traps every store; a shared-memory store does not, so a CQ doorbell written right
    after an SQ doorbell would overwrite it before the device looked. Each command therefore gets
    its own 64-bit latch after ``DOORBELL_BASE``; the word itself keeps the full v2 encoding.
    """
    return DOORBELL_BASE + 8 * int(cmd)


#: Kick-suppression word (not in QM, see :func:`fence`): the device stores 1 while no engine will
#: read the queue's SQ latch again unless kicked, 0 while one will; the driver kicks only on 1.
KICK_OFFSET: Final = DOORBELL_BASE + 8 * 4
#: Its index in :func:`doorbell_words`, after the four latches (indexed by ``DoorbellCmd``).
KICK: Final = 4


def doorbell_words(mmio: mmap.mmap) -> npt.NDArray[np.uint64]:
    """The four doorbell latches and the kick word of a mapped MMIO region, as one array."""
    first = DOORBELL_BASE // 8
    return np.frombuffer(mmio, dtype=np.uint64)[first:first + KICK + 1]


def fence() -> None:
    """A full memory barrier between a store and a load of two words another process shares.

    A real doorbell is one posted MMIO write; the simulation's kick — an eventfd write that wakes
    an engine in another process — measured ~50 µs of the worker's CPU on this 2-core VM, 15% of
    a 4 KiB request. So the device says when it is awake (``KICK_OFFSET``), as virtio's
    VRING_USED_F_NO_NOTIFY does, and a kick is sent only to a sleeping device. Driver: store the
    latch, fence, load the word; device going idle: store the word, fence, load the latch — one
    of the two loads sees the other's store, so no doorbell is missed. x86 may reorder a store
    with a later load; an uncontended lock is a locked instruction, which it may not cross.
    """
    with _FENCE:
        pass


_FENCE: Final = threading.Lock()


def encode_doorbell(qn: int, cmd: DoorbellCmd, index: int, priority: int = 0) -> int:
    """v2 encoding: qn[11:0] | cmd[15:12] | randata[31:16] = 0 | index[47:32] | priority[63:48]."""
    return (qn & 0xFFF) | ((int(cmd) & 0xF) << 12) | ((index & 0xFFFF) << 32) | ((priority & 0xFFFF) << 48)


def decode_doorbell(word: int) -> tuple[int, DoorbellCmd, int, int]:
    """Inverse of :func:`encode_doorbell`: ``(qn, cmd, index, priority)``."""
    return (word & 0xFFF, DoorbellCmd((word >> 12) & 0xF), (word >> 32) & 0xFFFF, (word >> 48) & 0xFFFF)


class QcType(enum.IntEnum):
    """Queue direction (UACCE_CMD_QM_SET_QP_CTX qc_type): fixed per queue, not per SQE."""

    COMPRESS = 0
    DECOMPRESS = 1


class Alg(enum.IntEnum):
    """``req_type`` in SQE dw9. Whole zstd frames are this device's own algorithm (the code sits
    after HW_LZ77_ZSTD); the two lz77_zstd codes are ZIP's (reference §2.7): LZ77 pass only."""

    LZ77_ZSTD_PRICE = 0x42  # L9: the price (optimal-parse) match finder
    LZ77_ZSTD = 0x43  # L8
    ZSTD = 0x44


class Status(enum.IntEnum):
    """SQE dw3[7:0] written by the engine (ZIP codes where they exist, see reference §2.7)."""

    OK = 0x00
    DST_TOO_SMALL = 0x0E  # ERR_DSTLEN_OUT
    BAD_ALG = 0x20
    BAD_LENGTH = 0x21
    BAD_LEVEL = 0x22
    ADDR_FAULT = 0x41  # the abort status seen on SMMU faults (UADK issues #220, #226)
    CORRUPT_INPUT = 0x10  # HZ_CRC_ERR: input is not a valid frame
    DECOMP_NO_SPACE = 0x01  # HZ_DECOMP_NO_SPACE: a stream's output filled the destination; send again
    DECOMP_END = 0x13  # HZ_DECOMP_END: a stream's frame ended in this BD
    BAD_CTX = 0x23  # this model's own: a stateful SQE whose stream context the engine does not hold
    NO_CTX_MEMORY = 0x24  # this model's own: a new stream's context does not fit the device's stream memory
    HW_ERROR = 0x42  # the engine hit a hardware (RAS) error; counts toward isolate_strategy


#: Stream BD statuses that are progress, not failures (UADK: 0x13 is success, NO_SPACE is WD_EAGAIN).
STREAM_PROGRESS: Final = frozenset({int(Status.DECOMP_NO_SPACE), int(Status.DECOMP_END)})

#: Largest input or output of one BD (ZIP's ``HZ_MAX_SIZE``); the library sends larger jobs as
#: stateful BDs of a stream (:mod:`warp.drv.split`).
MAX_JOB_BYTES: Final = 8 << 20
#: isolate_strategy: hardware errors per hour tolerated before isolation (UACCE_MAX_ERR_THRESHOLD).
ISOLATE_STRATEGY_MAX: Final = 65535
#: The window isolate_strategy counts hardware errors in (qm_hw_err_isolate: SECONDS_PER_HOUR).
HW_ERROR_WINDOW_S: Final = 3600

LEVEL_MIN: Final = -7
LEVEL_MAX: Final = 22


class W(enum.IntEnum):
    """SQE word indexes (dw numbers of ``struct hisi_zip_sqe``)."""

    CONSUMED = 0
    PRODUCED = 1  # lz77_zstd: the number of sequences
    LIT_NUM = 2  # comp_data_length; lz77_zstd: the literal count
    STATUS = 3
    INPUT_LEN = 4
    STREAM = 7  # flush_type bit 25, stream_mode bit 26, stream_new bit 27 (see STREAM_*)
    REQ_TYPE = 9
    LEVEL = 10  # signed zstd level, two's complement
    FLAGS = 11
    DICT_LEN = 12  # this model's own (ZIP has no dictionaries): the dictionary's length in bytes
    LIT_SIZE = 13  # lz77_zstd: literal-buffer size
    DEST_AVAIL = 14  # lz77_zstd: sequence-area size
    DICT_LO = 16  # this model's own: the dictionary's virtual address (FLAG_DICT)
    DICT_HI = 17
    SRC_LO = 18
    SRC_HI = 19
    DST_LO = 20
    DST_HI = 21
    CTX_LO = 22  # stream_ctx_addr: the session's ctx_buf
    CTX_HI = 23
    LIT_LO = 24  # lz77_zstd: literals_addr
    LIT_HI = 25
    TAG = 26
    LIT_OVERFLOW = 31  # lz77_zstd: the sequence whose litLength overflows u16 [23:0], litLength >> 16 [31:24]


FLAG_CHECKSUM: Final = 1 << 0
#: The job uses the zstd dictionary at ``DICT_HI:DICT_LO``, ``DICT_LEN`` bytes (see warp.dictionary).
FLAG_DICT: Final = 1 << 1

#: dw7 bits of a stream BD (``hisi_comp.c``): end the frame in this BD (flush_type FINISH; else
#: SYNC_FLUSH: everything given so far comes out), stateful mode, and the first BD of a stream.
STREAM_FINISH: Final = 1 << 25
STREAM_STATEFUL: Final = 1 << 26
STREAM_NEW: Final = 1 << 27
#: A stream session's ctx_buf (UADK's ``HW_CTX_SIZE``): user memory the engine keeps its record in.
STREAM_CTX_SIZE: Final = 0x10000
#: The start of a ctx_buf the engine keeps its record of the stream in (this model's own layout,
#: :mod:`warp.device.streams`); a session wipes it when it ends.
STREAM_RECORD_SIZE: Final = 32
#: dw9 window_size[15:12] (lz77_zstd): code → zstd windowLog. zstd windows are powers of two, so
#: ZIP's 24 KiB (code 3) is 32 KiB here.
WINDOW_SHIFT: Final = 12
WINDOW_LOG: Final = (12, 13, 14, 15, 15)

#: lz77_zstd limits and flat layout (reference §3.9): ``dst = [literals: LIT_RESERVE + input]
#: [sequences: n × seqDef][OVERFLOW_SIZE][FREQ_SIZE]``; an input BD is at most one zstd block.
ZSTD_MAX_SIZE: Final = 1 << 17
LIT_RESERVE: Final = 16
OVERFLOW_SIZE: Final = 8
FREQ_SIZE: Final = 784
#: zstd's ``seqDef``: ``offset`` is offBase (real offset + 3: this model never emits repcodes 1..3),
#: ``matchLength`` is matchLength − MINMATCH, ``litLength`` the low 16 bits (the rest in dw31).
SEQDEF_DTYPE: Final = np.dtype([("offset", "<u4"), ("litLength", "<u2"), ("matchLength", "<u2")])
OFFBASE: Final = 3
MINMATCH: Final = 3


def lit_overflow_word(position: int, high: int) -> int:
    """dw31: the one sequence of a BD whose litLength is ≥ 64 Ki (``high`` = litLength >> 16)."""
    return (position & 0xFFFFFF) | (high & 0xFF) << 24


def lit_overflow(word: int) -> tuple[int, int]:
    """Inverse of :func:`lit_overflow_word`: ``(position, high)``; ``high == 0`` means none."""
    return word & 0xFFFFFF, word >> 24

SQE_DTYPE: Final = np.dtype([(f"dw{i}", "<u4") for i in range(SQ_WORDS)])
CQE_DTYPE: Final = np.dtype([
    ("rsvd0", "<u4"), ("cmd_id", "<u2"), ("rsvd1", "<u2"),
    ("sq_head", "<u2"), ("sq_num", "<u2"), ("rsvd2", "<u2"), ("w7", "<u2"),
])
assert SQE_DTYPE.itemsize == SQE_SIZE and CQE_DTYPE.itemsize == CQE_SIZE

#: CQE as 8 u16 halfwords: index of sq_head, sq_num and w7 in that view.
CQE_HALF_SQ_HEAD: Final = 4
CQE_HALF_SQ_NUM: Final = 5
CQE_HALF_W7: Final = 7


def level_to_word(level: int) -> int:
    """Store a signed level in an unsigned SQE word."""
    return level & 0xFFFFFFFF


def word_to_level(word: int) -> int:
    return word - (1 << 32) if word & 0x80000000 else word
