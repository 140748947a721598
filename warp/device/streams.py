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
next BD is a new stream), a failed BD — or when its queue is put. A live context is never evicted
to make room for a new one (that cut another client's stream when a queue held 32 of them): the
new one is refused instead, below.

Device memory is finite where user memory is not: contexts together may hold at most ``memory``
bytes (``--stream-memory``), each charged zstd's estimate for it when its first BD comes (a
level-19 compression ~90 MiB, a decompression its frame's window). A first BD that does not fit
fails ``NO_CTX_MEMORY``, this model's own status, before anything is allocated — after the engine
let go of every context whose ctx_buf no longer carries its record: the library wipes a session's
record when the session ends, finished or abandoned, so a stream a client walked away from does not
hold memory until its queue is put.
"""

from __future__ import annotations

import secrets
import struct
import threading
from typing import Final, NamedTuple, final

import numpy as np
import numpy.typing as npt

from warp import abi, codec
from warp.device import dictionaries
from warp.device.qp import Qp
from warp.device.staging import staged
from warp.dfx import Dev
from warp.iommu.mmu import STAGED, Iommu, Mapping, TranslationFault
from warp.zstream import DEFAULT_MEMORY, ContextMemory, StreamContext

#: The record at the start of a ctx_buf: magic, token, bytes in, bytes out.
RECORD: Final = struct.Struct("<4sxxxxQQQ")
assert RECORD.size == abi.STREAM_RECORD_SIZE
MAGIC: Final = b"WZSC"

_W: Final = abi.W


class _Held(NamedTuple):
    """A context an engine holds: the token its record carries, what it was charged, and the
    mapping its ctx_buf is read through."""

    token: int
    context: StreamContext
    charge: int
    mapping: Mapping


@final
class Streams:
    """Every stream context the engines hold, by (queue id, ctx_buf address), within ``memory``."""

    def __init__(self, iommu: Iommu, dev: npt.NDArray[np.uint64], memory: int = DEFAULT_MEMORY) -> None:
        self._iommu = iommu
        self.memory = ContextMemory(memory)
        self._dev = dev  # the DFX device row: what is charged, the limit, refusals
        dev[Dev.STREAM_MEMORY_LIMIT] = memory
        self._lock = threading.Lock()
        self._contexts: dict[int, dict[int, _Held]] = {}

    def held(self, qid: int) -> int:
        """How many contexts queue ``qid`` holds (for tests and DFX)."""
        with self._lock:
            return len(self._contexts.get(qid, ()))

    def forget(self, qid: int) -> None:
        """The queue was put: its streams end with it."""
        with self._lock:
            for held in self._contexts.pop(qid, {}).values():
                self.memory.give(held.charge)
            self._dev[Dev.STREAM_MEMORY] = self.memory.charged

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
        src = w[base + _W.SRC_LO] | w[base + _W.SRC_HI] << 32
        if mode & abi.STREAM_NEW:
            try:
                context, more = self._new_context(qp, w, base, level)
                if context is None:
                    return abi.Status.BAD_LENGTH, 0, 0, faults
                token, more = self._adopt(qp, ctx, record, context, src, length, more)
            except TranslationFault as fault:
                return abi.Status.ADDR_FAULT, 0, 0, faults + fault.pages
            faults += more
            if token is None:
                return abi.Status.NO_CTX_MEMORY, 0, 0, faults
        else:
            found = self._find(qp.qid, ctx, record)
            if found is None:
                return abi.Status.BAD_CTX, 0, 0, faults
            token, context = found
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

    def _adopt(self, qp: Qp, ctx: int, record: npt.NDArray[np.uint8], context: StreamContext, src: int,
               length: int, faults: int) -> tuple[int | None, int]:
        """Hold a stream's new context, charged its footprint (a decompression's is read from the
        frame header at ``src``): ``(token, faults)``, no token if it does not fit ``memory`` even
        after the dead contexts are let go. Its record goes into the ctx_buf as it is held, not
        after its first BD: a sweep for room on another engine meanwhile must see it alive."""
        mapping = qp.mapping
        head = min(length, codec.FRAME_HEADER_MAX) if qp.qc_type is abi.QcType.DECOMPRESS else 0
        if head:
            faults += self._iommu.fault_in(mapping, src, head, write=False)
        need = context.footprint(qp.memory + (src - mapping.base) if head else codec.ffi.NULL, head)
        token = secrets.randbits(63) | 1
        with self._lock:
            table = self._contexts.setdefault(qp.qid, {})
            self._release(table, ctx)  # a new stream at a ctx_buf ends the one that was there
            if not self.memory.take(need):
                self._sweep()
                if not self.memory.take(need):
                    self._dev[Dev.STREAM_REFUSALS] += 1
                    return None, faults
            record[:] = np.frombuffer(RECORD.pack(MAGIC, token, 0, 0), dtype=np.uint8)
            table[ctx] = _Held(token, context, need, mapping)
            self._dev[Dev.STREAM_MEMORY] = self.memory.charged
        return token, faults

    def _sweep(self) -> None:
        """Let go of every context whose ctx_buf no longer carries its record (its session ended,
        or the memory was freed and reused). Called with the lock held, only when memory is short."""
        for table in self._contexts.values():
            for ctx, held in list(table.items()):
                if not self._alive(ctx, held):
                    self._release(table, ctx)

    def _alive(self, ctx: int, held: _Held) -> bool:
        mapping = held.mapping
        try:
            self._iommu.fault_in(mapping, ctx, RECORD.size, write=False)
        except TranslationFault:
            return False
        at = ctx - mapping.base
        magic, token, _in, _out = RECORD.unpack(mapping.memory[at:at + RECORD.size].tobytes())
        return bool(magic == MAGIC and token == held.token)

    def _release(self, table: dict[int, _Held], ctx: int) -> None:
        held = table.pop(ctx, None)
        if held is not None:
            self.memory.give(held.charge)
            self._dev[Dev.STREAM_MEMORY] = self.memory.charged

    def _find(self, qid: int, ctx: int, record: np.ndarray) -> tuple[int, StreamContext] | None:
        magic, token, _in, _out = RECORD.unpack(record.tobytes())
        with self._lock:
            table = self._contexts.get(qid)
            found = table.get(ctx) if table is not None else None
            if found is None or magic != MAGIC or found.token != token:
                return None
            return found.token, found.context

    def _drop(self, qid: int, ctx: int) -> None:
        with self._lock:
            table = self._contexts.get(qid)
            if table is not None:
                self._release(table, ctx)
