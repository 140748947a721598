"""Stream sessions on the device: the stateful BDs of ``wd_do_comp_strm`` and their contexts.

A stateful BD (dw7 ``stream_mode``) names its session's ctx_buf (dw22/23 ``stream_ctx_addr``), a
buffer in the user's memory. On ZIP the engine keeps the whole stream state there and reads it back
at the next BD. A zstd context holds raw pointers and megabytes of tables, which user memory must
never carry into the device process (a user could forge them), so here the engine keeps each
stream's :class:`~warp.zstream.StreamContext` in device memory, indexed by (queue, ctx_buf
address), and writes only a record into the ctx_buf: a magic word, a token naming the context, and
the bytes in and out so far. A BD whose ctx_buf does not carry the token of a context the engine
holds fails with ``BAD_CTX``: a session that freed its ctx_buf and reused the memory, another
process's address, or a context the table evicted.

The BDs of one stream are on one queue, which one engine serves at a time, so a context is never
stepped by two engines at once. A context ends with its stream — the FINISH BD of a compression,
the end of a frame in a decompression (a decoder holds nothing between frames, so the session's
next BD is a new stream), a failed BD — when its queue is put, or when the queue holds ``CONTEXTS_PER_QUEUE`` others
(least recently used first).
"""

from __future__ import annotations

import secrets
import struct
import threading
from collections import OrderedDict
from typing import Final, final

import numpy as np

from warp import abi
from warp.device import dictionaries
from warp.device.qp import Qp
from warp.device.staging import staged
from warp.iommu.mmu import STAGED, Iommu, TranslationFault
from warp.zstream import StreamContext

#: Contexts a queue may hold at once; the least recently used goes first.
CONTEXTS_PER_QUEUE: Final = 32
#: The record at the start of a ctx_buf: magic, token, bytes in, bytes out.
RECORD: Final = struct.Struct("<4sxxxxQQQ")
MAGIC: Final = b"WZSC"

_W: Final = abi.W


@final
class Streams:
    """Every stream context the engines hold, by (queue id, ctx_buf address)."""

    def __init__(self, iommu: Iommu) -> None:
        self._iommu = iommu
        self._lock = threading.Lock()
        self._contexts: dict[int, OrderedDict[int, tuple[int, StreamContext]]] = {}

    def held(self, qid: int) -> int:
        """How many contexts queue ``qid`` holds (for tests and DFX)."""
        with self._lock:
            return len(self._contexts.get(qid, ()))

    def forget(self, qid: int) -> None:
        """The queue was put: its streams end with it."""
        with self._lock:
            self._contexts.pop(qid, None)

    def execute(self, qp: Qp, w: memoryview, base: int, level: int) -> tuple[int, int, int, int]:
        """Run the stateful SQE at word ``base``: ``(status, consumed, produced, faults)``."""
        mode = w[base + _W.STREAM]
        ctx = w[base + _W.CTX_LO] | w[base + _W.CTX_HI] << 32
        length, capacity = w[base + _W.INPUT_LEN], w[base + _W.DEST_AVAIL]
        mapping = qp.mapping
        try:
            faults = self._iommu.fault_in(mapping, ctx, RECORD.size, write=True)
        except TranslationFault as fault:
            return abi.Status.ADDR_FAULT, 0, 0, fault.pages
        record = mapping.memory[ctx - mapping.base:ctx - mapping.base + RECORD.size]
        if mode & abi.STREAM_NEW:
            try:
                context, more = self._new_context(qp, w, base, level)
            except TranslationFault as fault:
                return abi.Status.ADDR_FAULT, 0, 0, faults + fault.pages
            if context is None:
                return abi.Status.BAD_LENGTH, 0, 0, faults
            faults += more
            token = self._adopt(qp.qid, ctx, context)
        else:
            found = self._find(qp.qid, ctx, record)
            if found is None:
                return abi.Status.BAD_CTX, 0, 0, faults
            token, context = found
        src = w[base + _W.SRC_LO] | w[base + _W.SRC_HI] << 32
        dst = w[base + _W.DST_LO] | w[base + _W.DST_HI] << 32
        try:
            status, consumed, produced, more = self._step(qp, context, src, length, dst, capacity,
                                                         bool(mode & abi.STREAM_FINISH))
        except TranslationFault as fault:
            status, consumed, produced, more = abi.Status.ADDR_FAULT, 0, 0, fault.pages
        faults += more
        ended = status not in (abi.Status.OK, abi.Status.DECOMP_NO_SPACE) or (
            mode & abi.STREAM_FINISH and qp.qc_type is abi.QcType.COMPRESS)
        if ended:
            self._drop(qp.qid, ctx)
        record[:] = np.frombuffer(RECORD.pack(MAGIC, 0 if ended else token, context.total_in, context.total_out),
                                  dtype=np.uint8)
        return status, consumed, produced, faults

    def _new_context(self, qp: Qp, w: memoryview, base: int, level: int) -> tuple[StreamContext | None, int]:
        """The context of a stream's first BD, with the dictionary its SQE names (``FLAG_DICT``:
        read through the IOMMU like a source, and copied into the context): ``(context, faults)``;
        no context for a dictionary of a bad length."""
        flags = w[base + _W.FLAGS]
        if not flags & abi.FLAG_DICT:
            return StreamContext(qp.qc_type, level, bool(flags & abi.FLAG_CHECKSUM)), 0
        words = dictionaries.named(w, base)
        if words is None:
            return None, 0
        address, length = words
        faults = self._iommu.fault_in(qp.mapping, address, length, write=False)
        dictionary = (qp.memory + (address - qp.mapping.base), length)
        return StreamContext(qp.qc_type, level, bool(flags & abi.FLAG_CHECKSUM), dictionary), faults

    def _step(self, qp: Qp, context: StreamContext, src: int, length: int, dst: int, capacity: int,
              finish: bool) -> tuple[abi.Status, int, int, int]:
        """Translate the BD's windows and step the context; output to a destination with pages
        the engine cannot write yet goes through the engine's own buffer (:mod:`warp.device.staging`)."""
        mapping = qp.mapping
        source, target, faults = self._iommu.translate_job(mapping, src, length, dst, capacity)
        if target != STAGED:
            status, consumed, produced = context.step(qp.memory + target, capacity, qp.memory + source, length,
                                                      finish)
            return status, consumed, produced, faults
        (status, consumed, produced), more = staged(
            self._iommu, mapping, dst, capacity,
            lambda out: context.step(out, capacity, qp.memory + source, length, finish))
        return status, consumed, produced, faults + more

    def _adopt(self, qid: int, ctx: int, context: StreamContext) -> int:
        token = secrets.randbits(63) | 1
        with self._lock:
            table = self._contexts.setdefault(qid, OrderedDict())
            table.pop(ctx, None)
            table[ctx] = (token, context)
            while len(table) > CONTEXTS_PER_QUEUE:
                table.popitem(last=False)
        return token

    def _find(self, qid: int, ctx: int, record: np.ndarray) -> tuple[int, StreamContext] | None:
        magic, token, _in, _out = RECORD.unpack(record.tobytes())
        with self._lock:
            table = self._contexts.get(qid)
            found = table.get(ctx) if table is not None else None
            if found is None or magic != MAGIC or found[0] != token:
                return None
            table.move_to_end(ctx)  # type: ignore[union-attr]  # found implies the table
            return found

    def _drop(self, qid: int, ctx: int) -> None:
        with self._lock:
            table = self._contexts.get(qid)
            if table is not None:
                table.pop(ctx, None)
