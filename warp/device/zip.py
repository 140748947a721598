"""The zstd accelerator behind the uacce core: queue pairs, engines, ring processing, interrupts.

Queue memory (MMIO doorbell page and DUS rings) is a memfd per queue pair, created when the queue
is taken: a memfd mapping cannot be revoked from the other process, so a fresh one per get_queue
gives the guarantee that ``unmap_mapping_range`` gives the kernel — a process that put its queue
cannot write into the next owner's rings.

Engines share one epoll set of doorbell eventfds registered EPOLLONESHOT: a doorbelled queue goes
to exactly one engine (so completions stay in order per queue), which fetches at most ``batch``
SQEs, posts their CQEs, raises one interrupt for the batch, and — if SQEs remain — kicks the queue
again so it rejoins the ready list behind the others (round-robin arbitration).
"""

from __future__ import annotations

import errno
import mmap
import os
import select
import threading
import time
from dataclasses import dataclass, field
from typing import Final, final

import numpy as np
import numpy.typing as npt

from warp import abi, cdev, codec
from warp.dfx import Dev, Dfx, Engine, Queue
from warp.iommu.mmu import Iommu, Mapping, TranslationFault
from warp.ring import CqProducer, DusView, RingOverflow, SqConsumer

ALGORITHMS: Final = ("zstd",)


@final
@dataclass(eq=False)
class Qp:
    """One hardware queue pair and everything the engines need to serve it."""

    qid: int
    mapping: Mapping
    counters: npt.NDArray[np.uint64]
    mmio_fd: int
    dus_fd: int
    mmio: mmap.mmap
    dus: mmap.mmap
    view: DusView
    latches: npt.NDArray[np.uint64]
    db_fd: int
    irq_fd: int
    memory: codec.Pointer
    sq: SqConsumer = field(default_factory=SqConsumer)
    cq: CqProducer = field(default_factory=CqProducer)
    qc_type: abi.QcType = abi.QcType.COMPRESS
    lock: threading.Lock = field(default_factory=threading.Lock)
    running: bool = False

    def close(self) -> None:
        codec.release(self.memory)
        self.view.release()
        del self.latches
        self.mmio.close()
        self.dus.close()
        for fd in (self.mmio_fd, self.dus_fd, self.db_fd, self.irq_fd):
            os.close(fd)


@final
class ZipDevice:
    """``uacce_ops`` of the zstd device plus its engines."""

    name = "warp_zip-0"
    algorithms = ALGORITHMS

    def __init__(self, iommu: Iommu, dfx: Dfx, engines: int = 1, batch: int = 32, irq_coalesce: int = 4) -> None:
        self.iommu = iommu
        self.dfx = dfx
        self.batch = batch
        self.irq_coalesce = irq_coalesce
        self._lock = threading.Lock()
        self._free = list(range(dfx.queues))
        self._by_db: dict[int, Qp] = {}
        self._epoll = select.epoll()
        self._stop = threading.Event()
        self._engines = [threading.Thread(target=self._engine, args=(i,), name=f"engine-{i}", daemon=True)
                         for i in range(engines)]
        for thread in self._engines:
            thread.start()

    # ---- uacce_ops -------------------------------------------------------------------------
    def available_instances(self) -> int:
        with self._lock:
            return len(self._free)

    def isolated(self) -> bool:
        return bool(self.dfx.dev[Dev.ISOLATED])

    def get_queue(self, mapping: Mapping) -> Qp:
        with self._lock:
            if not self._free:
                raise OSError(errno.EBUSY, f"all {self.dfx.queues} queues are busy")
            qid = self._free.pop(0)
        mmio_fd = _memfd(f"warp-qp{qid}-mmio", abi.MMIO_SIZE)
        dus_fd = _memfd(f"warp-qp{qid}-dus", abi.DUS_SIZE)
        mmio = mmap.mmap(mmio_fd, abi.MMIO_SIZE)
        dus = mmap.mmap(dus_fd, abi.DUS_SIZE)
        latches = np.frombuffer(mmio, dtype=np.uint64)[abi.DOORBELL_BASE // 8:abi.DOORBELL_BASE // 8 + 4]
        counters = self.dfx.queue(qid)  # counters are cumulative per queue pair, across owners
        counters[Queue.SQ_PENDING] = 0
        counters[Queue.PASID] = mapping.pasid
        counters[Queue.STATE] = 1
        return Qp(qid=qid, mapping=mapping, counters=counters, mmio_fd=mmio_fd, dus_fd=dus_fd, mmio=mmio,
                  dus=dus, view=DusView.over(memoryview(dus)), latches=latches,
                  db_fd=os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC),
                  irq_fd=os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC),
                  memory=codec.pointer(mapping.heap))

    def put_queue(self, qp: Qp) -> None:
        qp.counters[Queue.STATE] = 0
        qp.counters[Queue.PASID] = 0
        qp.close()
        with self._lock:
            self._free.append(qp.qid)
            self._free.sort()

    def start_queue(self, qp: Qp) -> None:
        qp.running = True
        qp.counters[Queue.STATE] = 2
        with self._lock:
            self._by_db[qp.db_fd] = qp
        self._epoll.register(qp.db_fd, select.EPOLLIN | select.EPOLLONESHOT)

    def stop_queue(self, qp: Qp) -> None:
        """Drain: every SQE doorbelled before the stop completes (or fails) with a CQE."""
        with self._lock:
            self._by_db.pop(qp.db_fd, None)
        try:
            self._epoll.unregister(qp.db_fd)
        except (OSError, ValueError):
            pass
        with qp.lock:
            while self._serve(qp, engine=None, budget=abi.QUEUE_DEPTH):
                pass
            qp.running = False
        qp.counters[Queue.STATE] = 1

    def mmap(self, qp: Qp, region: abi.Region) -> list[int]:
        if region is abi.Region.MMIO:
            return [qp.mmio_fd, qp.db_fd]
        return [qp.dus_fd]

    def ioctl(self, qp: Qp, message: cdev.Message) -> cdev.Message:
        if message.get("op") == "set_qp_ctx":
            try:
                qp.qc_type = abi.QcType(int(message.get("qc_type", -1)))
            except ValueError:
                raise OSError(errno.EINVAL, "qc_type must be 0 (compress) or 1 (decompress)") from None
            qp.counters[Queue.QC_TYPE] = qp.qc_type
            return {"sqn": qp.qid}
        raise OSError(errno.EINVAL, f"unknown ioctl {message.get('op')!r}")

    def irq_fd(self, qp: Qp) -> int:
        return qp.irq_fd

    def close(self) -> None:
        self._stop.set()
        for thread in self._engines:
            thread.join(timeout=5)
        self._epoll.close()

    # ---- engines ---------------------------------------------------------------------------
    def _engine(self, eid: int) -> None:
        row = self.dfx.engine(eid)
        worker = _EngineState(eid=eid, codec=codec.Codec(), counters=row)
        while not self._stop.is_set():
            try:
                events = self._epoll.poll(0.2)
            except (OSError, ValueError):
                return
            for fd, _mask in events:
                with self._lock:
                    qp = self._by_db.get(fd)
                if qp is None:
                    continue
                with qp.lock:
                    if not qp.running:
                        continue
                    try:
                        kicks = os.eventfd_read(fd)
                    except BlockingIOError:
                        kicks = 0
                    qp.counters[Queue.DOORBELLS] += kicks
                    more = self._serve(qp, worker, self.batch)
                    if more:
                        os.eventfd_write(fd, 1)  # back of the ready list: round-robin
                    try:
                        self._epoll.modify(fd, select.EPOLLIN | select.EPOLLONESHOT)
                    except (OSError, ValueError):
                        pass

    def _serve(self, qp: Qp, engine: _EngineState | None, budget: int) -> bool:
        """Fetch up to ``budget`` doorbelled SQEs and complete them in order; True if more wait.

        Counters are summed in locals and stored once per batch: a numpy scalar update costs
        about as much as the rest of a small job's bookkeeping.
        """
        c = qp.counters
        view = qp.view
        if view.tx_stopped:
            return False
        qn, cmd, tail, _prio = abi.decode_doorbell(int(qp.latches[abi.DoorbellCmd.SQ]))
        if qn != qp.qid or cmd is not abi.DoorbellCmd.SQ:
            return False  # no valid SQ doorbell yet
        cq_word = int(qp.latches[abi.DoorbellCmd.CQ])
        _qn, _cmd, cq_head, cq_prio = abi.decode_doorbell(cq_word)
        if cq_word:
            qp.cq.doorbell(cq_head)
        pending = qp.sq.pending(tail)
        take = min(pending, budget)
        if not take:
            c[Queue.SQ_PENDING] = 0
            return False
        worker = engine or _EngineState(eid=-1, codec=codec.Codec(), counters=None)
        started = time.monotonic_ns()
        words = view.sq
        bytes_in = bytes_out = ok = faults = done = unsignalled = 0
        armed = bool(cq_prio & 1)
        try:
            for _ in range(take):
                slot = qp.sq.pop()
                base = slot * abi.SQ_WORDS
                status, consumed, produced, job_faults = self._execute(qp, words, base, worker)
                words[base + abi.W.CONSUMED] = consumed
                words[base + abi.W.PRODUCED] = produced
                words[base + abi.W.STATUS] = (words[base + abi.W.STATUS] & ~0xFF) | status
                try:
                    qp.cq.post(view.cq, slot, qp.qid)
                except RingOverflow:
                    self.dfx.dev[Dev.CQ_OVERFLOWS] += 1
                    view.stop()  # QM_CQ_OVERFLOW: the queue is disabled, as qm_disable_qp
                    return False
                done += 1
                ok += status == abi.Status.OK
                bytes_in += consumed
                bytes_out += produced
                faults += job_faults
                unsignalled += 1
                if armed and unsignalled >= self.irq_coalesce:
                    self._interrupt(qp)
                    unsignalled = 0
        finally:
            c[Queue.SUBMITTED] += done
            c[Queue.COMPLETED_OK] += ok
            c[Queue.COMPLETED_ERR] += done - ok
            c[Queue.BYTES_IN] += bytes_in
            c[Queue.BYTES_OUT] += bytes_out
            c[Queue.IOPF] += faults
            c[Queue.BATCHES] += 1
            c[Queue.SQ_PENDING] = pending - done
            if armed and unsignalled:
                self._interrupt(qp)
            if worker.counters is not None:
                e = worker.counters
                e[Engine.JOBS] += done
                e[Engine.BATCHES] += 1
                e[Engine.BUSY_NS] += time.monotonic_ns() - started
                e[Engine.BYTES_IN] += bytes_in
        return pending > take

    @staticmethod
    def _interrupt(qp: Qp) -> None:
        """Raise the queue's interrupt (moderated: once per ``irq_coalesce`` CQEs and per batch end)."""
        os.eventfd_write(qp.irq_fd, 1)
        qp.counters[Queue.INTERRUPTS] += 1

    def _execute(self, qp: Qp, w: memoryview, base: int, worker: _EngineState) -> tuple[int, int, int, int]:
        """Run the SQE at word ``base``: ``(status, consumed, produced, faults)``. Bad SQEs fail, never raise."""
        alg = w[base + abi.W.REQ_TYPE] & 0xFF
        length = w[base + abi.W.INPUT_LEN]
        capacity = w[base + abi.W.DEST_AVAIL]
        level = abi.word_to_level(w[base + abi.W.LEVEL])
        if alg != abi.Alg.ZSTD:
            return abi.Status.BAD_ALG, 0, 0, 0
        if length > abi.MAX_JOB_BYTES or capacity > abi.MAX_JOB_BYTES:
            return abi.Status.BAD_LENGTH, 0, 0, 0
        if not abi.LEVEL_MIN <= level <= abi.LEVEL_MAX:
            return abi.Status.BAD_LEVEL, 0, 0, 0
        src = w[base + abi.W.SRC_LO] | w[base + abi.W.SRC_HI] << 32
        dst = w[base + abi.W.DST_LO] | w[base + abi.W.DST_HI] << 32
        try:
            source = self.iommu.translate(qp.mapping, src, length, write=False)
            target = self.iommu.translate(qp.mapping, dst, capacity, write=True)
        except TranslationFault as fault:
            return abi.Status.ADDR_FAULT, 0, 0, fault.pages
        status, produced = worker.codec.run(qp.qc_type, qp.memory + target.offset, capacity,
                                            qp.memory + source.offset, length, level,
                                            bool(w[base + abi.W.FLAGS] & abi.FLAG_CHECKSUM))
        return status, (length if status == abi.Status.OK else 0), produced, source.faults + target.faults


@final
@dataclass
class _EngineState:
    eid: int
    codec: codec.Codec
    counters: npt.NDArray[np.uint64] | None


def _memfd(name: str, size: int) -> int:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    os.ftruncate(fd, size)
    return fd
