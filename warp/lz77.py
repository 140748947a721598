"""lz77_zstd, the HiSilicon zstd path: the LZ77 pass an engine runs on one BD, and the frame the
software stage builds from the BDs' literals and sequences (reference §3.9).

ZIP does only zstd's match finding: per BD (≤ 128 KiB, one zstd block) it writes the literals and
``seqDef`` sequences in the flat layout of :mod:`warp.abi`, and software zstd does the entropy
coding and the frame (KAEZstd). Both halves are native here, through python-zstandard's cffi
backend: the pass is ``ZSTD_generateSequences`` (zstd's own match finder standing for the
engine's), the frame is ``ZSTD_compressSequencesAndLiterals`` over the BDs' literal buffers — the
one copy KAEZstd also makes, into ``seqStore``. Per-sequence conversion is numpy, never a Python
loop. The device's engines and the cpu driver run the same :class:`Lz77`, so failover gives the
same frame.

The model is stateless per BD: offsets are real (offBase = offset + 3), and zstd re-derives
repcodes when it encodes the frame; ZIP keeps repcodes across BDs in ``ctx_buf`` instead.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Final, final

import numpy as np
import numpy.typing as npt

from warp import abi
from warp.codec import CodecError, Pointer, ffi, lib

#: zstd levels whose match finders stand for ZIP's: L8 a lazy hash chain, L9 ("price") the
#: optimal parser (btopt), which prices each choice as ZIP's price mode does.
MATCH_FINDER: Final = {8: 8, 9: 16}
ALGORITHM: Final = {8: abi.Alg.LZ77_ZSTD, 9: abi.Alg.LZ77_ZSTD_PRICE}
#: The longest match one ``seqDef`` holds is 0xFFFF + MINMATCH; longer ones are cut into pieces
#: of this length (each a sequence with no literals and the same offset), as zstd's seqStore
#: would otherwise need a second long-length slot that dw31 does not have.
MATCH_PIECE: Final = 1 << 16
#: zstd's match finder refuses a block this short (an error, not an empty result); no match
#: could pay for itself in one anyway, so such a BD is all literals.
SHORTEST: Final = 7
_SEQUENCE: Final = np.dtype([("offset", "<u4"), ("litLength", "<u4"), ("matchLength", "<u4"), ("rep", "<u4")])
_U8 = npt.NDArray[np.uint8]
_local = threading.local()
_I64 = npt.NDArray[np.int64]


def hw_params(level: int) -> tuple[int, int]:
    """KAEZstd's map from a zstd level to ZIP's ``(level, window code)``: 0–3 → L8/4K, pairs of
    levels up to 10–11 → L8/32K, 12–13 → L9/4K, … ≥ 20 → L9/32K."""
    if level < 12:
        return 8, 0 if level < 4 else min((level - 4) // 2 + 1, 4)
    return 9, min((level - 12) // 2, 4)


def literal_size(length: int) -> int:
    """dw13: the literal buffer a BD of ``length`` needs (``lits_size``)."""
    return length + abi.LIT_RESERVE


def bds(length: int) -> list[tuple[int, int]]:
    """The BDs a body of ``length`` bytes is cut into, as ``(offset, length)``: ``ZSTD_MAX_SIZE``
    each, the last one shorter (one empty BD for an empty body: its frame still needs a block)."""
    return [(at, min(abi.ZSTD_MAX_SIZE, length - at)) for at in range(0, max(length, 1), abi.ZSTD_MAX_SIZE)]


def output_size(length: int) -> int:
    """The whole flat output of a BD: literals, at most one sequence per MINMATCH input bytes,
    the overflow word and the frequency table."""
    return literal_size(length) + (length // abi.MINMATCH) * abi.SEQDEF_DTYPE.itemsize + abi.OVERFLOW_SIZE \
        + abi.FREQ_SIZE


def refusal(alg: int, length: int, level: int, window: int, lits_size: int) -> abi.Status | None:
    """Why a BD is refused before the pass, as the engine checks its SQE; None if it runs."""
    if length > abi.ZSTD_MAX_SIZE:
        return abi.Status.BAD_LENGTH
    if ALGORITHM.get(level) != alg or window >= len(abi.WINDOW_LOG):
        return abi.Status.BAD_LEVEL
    if lits_size < literal_size(length):
        return abi.Status.DST_TOO_SMALL
    return None


@final
@dataclass(frozen=True, slots=True)
class Pass:
    """One BD's result: the literals, the sequence area (seqDefs, overflow, freq) and dw31."""

    literals: _U8
    sequences: int
    area: _U8
    overflow: int


@final
class Lz77:
    """One thread's match-finder contexts (one per level and window)."""

    def __init__(self) -> None:
        self._cctx: dict[tuple[int, int], Any] = {}

    def run(self, src: Pointer, data: _U8, level: int, window: int) -> Pass:
        """The pass over ``data`` (``src`` points at it): its literals and seqDefs."""
        length = len(data)
        raw = np.zeros(int(lib.ZSTD_sequenceBound(length)), dtype=_SEQUENCE)
        count = 0
        if length >= SHORTEST:
            seqs = ffi.cast("ZSTD_Sequence *", ffi.from_buffer(raw))
            count = _size(lib.ZSTD_generateSequences(self._context(level, window), seqs, len(raw), src, length))
            count = int(lib.ZSTD_mergeBlockDelimiters(seqs, count))
        found = raw[:count]
        lit = found["litLength"].astype(np.int64)
        match = found["matchLength"].astype(np.int64)
        literals = _literals(data, lit, match)
        offsets, lit, match = _cut_long_matches(found["offset"].astype(np.int64), lit, match)
        area = np.zeros(len(lit) * abi.SEQDEF_DTYPE.itemsize + abi.OVERFLOW_SIZE + abi.FREQ_SIZE, dtype=np.uint8)
        seqdefs = area[:len(lit) * abi.SEQDEF_DTYPE.itemsize].view(abi.SEQDEF_DTYPE)
        seqdefs["offset"] = offsets + abi.OFFBASE
        seqdefs["litLength"] = lit & 0xFFFF
        seqdefs["matchLength"] = match - abi.MINMATCH
        long_lit = np.flatnonzero(lit > 0xFFFF)  # at most one: two would need 128 KiB of literals
        overflow = abi.lit_overflow_word(int(long_lit[0]), int(lit[long_lit[0]]) >> 16) if len(long_lit) else 0
        return Pass(literals=literals, sequences=len(lit), area=area, overflow=overflow)

    def _context(self, level: int, window: int) -> Any:
        cctx = self._cctx.get((level, window))
        if cctx is None:
            cctx = ffi.gc(lib.ZSTD_createCCtx(), lib.ZSTD_freeCCtx)
            _size(lib.ZSTD_CCtx_setParameter(cctx, lib.ZSTD_c_compressionLevel, MATCH_FINDER[level]))
            _size(lib.ZSTD_CCtx_setParameter(cctx, lib.ZSTD_c_windowLog, abi.WINDOW_LOG[window]))
            self._cctx[(level, window)] = cctx
        return cctx


def this_thread() -> Lz77:
    """This thread's match-finder contexts: engine threads and cpu workers keep their own."""
    found: Lz77 | None = getattr(_local, "lz77", None)
    if found is None:
        found = _local.lz77 = Lz77()
    return found


def _literals(data: _U8, lit: _I64, match: _I64) -> _U8:
    """The literal bytes in order — each sequence's, then the BD's last ones — gathered with one
    index array: literal ``k`` of sequence ``i`` is at ``start[i] + k``."""
    start = np.cumsum(lit + match) - lit - match
    before = np.cumsum(lit) - lit  # literals of the earlier sequences
    total = int(lit.sum())
    index = np.repeat(start - before, lit) + np.arange(total, dtype=np.int64)
    covered = int(lit.sum() + match.sum())
    return np.concatenate((data[index], data[covered:]))


def _cut_long_matches(offsets: _I64, lit: _I64, match: _I64) -> tuple[_I64, _I64, _I64]:
    """Matches over one seqDef's reach as runs of ``MATCH_PIECE`` pieces (the last ≥ MINMATCH)."""
    pieces = (match + MATCH_PIECE - 1) // MATCH_PIECE
    if len(pieces) == 0 or int(pieces.max()) <= 1:
        return offsets, lit, match
    owner = np.repeat(np.arange(len(match)), pieces)
    rank = np.arange(len(owner)) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    last = rank == pieces[owner] - 1
    cut = np.where(last, match[owner] - rank * MATCH_PIECE, MATCH_PIECE)
    short = np.flatnonzero(last & (cut < abi.MINMATCH))
    cut[short] += abi.MINMATCH  # borrow from the piece before, which stays far above MINMATCH
    cut[short - 1] -= abi.MINMATCH
    return offsets[owner], np.where(rank == 0, lit[owner], 0), cut


@final
@dataclass(frozen=True, slots=True)
class Block:
    """What the software stage reads back of one BD: its literals and sequence area in the
    destination buffer, and the SQE's counts."""

    output: memoryview
    length: int
    literals: int
    sequences: int
    overflow: int


def sequences(block: Block) -> npt.NDArray[Any]:
    """A BD's seqDefs as ``ZSTD_Sequence`` records, closed by its block delimiter (the last
    literals): what ``ZSTD_compressSequencesAndLiterals`` takes, one block per BD."""
    start = literal_size(block.length)
    seqdefs = np.frombuffer(block.output, dtype=abi.SEQDEF_DTYPE, count=block.sequences, offset=start)
    out = np.zeros(block.sequences + 1, dtype=_SEQUENCE)
    body = out[:-1]
    body["offset"] = seqdefs["offset"] - abi.OFFBASE
    body["litLength"] = seqdefs["litLength"]
    body["matchLength"] = seqdefs["matchLength"].astype(np.uint32) + abi.MINMATCH
    position, high = abi.lit_overflow(block.overflow)
    if high:
        body["litLength"][position] += high << 16
    out[-1]["litLength"] = block.literals - int(body["litLength"].sum(dtype=np.int64))
    return out


def frame(blocks: list[Block], source: bytes | bytearray | memoryview, checksum: bool) -> bytes:
    """One zstd frame of the BDs, entropy-coded and framed by zstd from their sequences.

    From the literals (``ZSTD_compressSequencesAndLiterals``) when zstd can: that API refuses a
    block it would store raw and a frame checksum (it never sees the source), and then the frame is
    built from the sequences and ``source`` (``ZSTD_compressSequences``), which stores such a block
    raw as KAEZstd's zstd does."""
    records = np.concatenate([sequences(block) for block in blocks])
    total = sum(block.length for block in blocks)
    capacity = int(lib.ZSTD_compressBound(total)) + 64
    out = bytearray(capacity)
    cctx = _frame_context()
    _size(lib.ZSTD_CCtx_reset(cctx, lib.ZSTD_reset_session_and_parameters))
    _size(lib.ZSTD_CCtx_setParameter(cctx, lib.ZSTD_c_blockDelimiters, lib.ZSTD_sf_explicitBlockDelimiters))
    seqs = ffi.cast("ZSTD_Sequence *", ffi.from_buffer(records))
    result = None
    if not checksum:
        literals = np.concatenate([np.frombuffer(b.output, np.uint8, b.literals) for b in blocks]
                                  + [np.zeros(abi.LIT_RESERVE, np.uint8)])
        result = lib.ZSTD_compressSequencesAndLiterals(
            cctx, ffi.from_buffer(out), capacity, seqs, len(records), ffi.from_buffer(literals),
            len(literals) - abi.LIT_RESERVE, len(literals), total)
    if result is None or lib.ZSTD_isError(result):
        lib.ZSTD_CCtx_reset(cctx, lib.ZSTD_reset_session_only)
        _size(lib.ZSTD_CCtx_setParameter(cctx, lib.ZSTD_c_checksumFlag, int(checksum)))
        result = lib.ZSTD_compressSequences(cctx, ffi.from_buffer(out), capacity, seqs, len(records),
                                            ffi.from_buffer(source), total)
    return bytes(memoryview(out)[:_size(result)])


def _frame_context() -> Any:
    """This thread's context for frames: a fresh one per frame cost ~15% of the software stage."""
    cctx = getattr(_local, "cctx", None)
    if cctx is None:
        cctx = _local.cctx = ffi.gc(lib.ZSTD_createCCtx(), lib.ZSTD_freeCCtx)
    return cctx


def _size(result: int) -> int:
    if lib.ZSTD_isError(result):
        raise CodecError(result)
    return int(result)
