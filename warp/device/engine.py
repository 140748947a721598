"""The ZIP engines: threads that fetch doorbelled SQEs, run them and post their CQEs.

What the accelerator's silicon does, so no kernel file is its counterpart: ``qm.c`` only rings
the doorbells these engines answer, and waits in ``hisi_qm_stop_qp`` for the drain modelled here.
Queue pairs are in :mod:`warp.device.qp`, errors and isolation in :mod:`warp.device.ras`.

Engines come in two pools, compression and decompression (:mod:`warp.device.pool`); a started
queue's doorbell eventfd joins its direction's epoll set, registered EPOLLONESHOT: a doorbelled
queue goes to exactly one engine of that pool (so completions stay in order per queue), which
fetches at most ``batch`` SQEs, posts their CQEs, raises its interrupts (moderated by count, and by
time with ``irq_delay_us``), and — if SQEs remain — kicks the queue again so it rejoins the ready
list behind the others (round-robin arbitration). With a timing model each job takes at least its
modelled time, the engine sleeping out the rest (:meth:`Engines._execute_timed`).

Stopping a queue (PUT_Q or close) drains it, as ``hisi_qm_stop_qp`` → ``qm_drain_qp``: the engines
finish every SQE doorbelled before the stop, each with its real status, and only then does the
queue stop. A drain that makes no progress for ``DRAIN_STALL_S`` (a hung engine) is a hardware
error: the queue stops with the SQEs no engine fetched left without a CQE (counted in
``Queue.FLUSHED``) and the controller reset runs (:meth:`warp.device.ras.Ras.drain_failed`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Final, final

from warp import abi, codec
from warp.device import lz77
from warp.device.dictionaries import EngineDictionaries
from warp.device.irq import Moderator
from warp.device.pool import Pool, PoolSizes, Timing
from warp.device.qp import Qp, QpState, cq_doorbell, interrupt, sq_tail, u64
from warp.device.ras import Ras
from warp.device.staging import staged
from warp.device.streams import Streams
from warp.dfx import Dev, Dfx, Engine, Queue
from warp.iommu.mmu import STAGED, Iommu, TranslationFault
from warp.ring import RingOverflow
from warp.words import (
    CHECKSUM,
    CONSUMED,
    DEST_AVAIL,
    DICT,
    DST_HI,
    DST_LO,
    FLAGS,
    INPUT_LEN,
    LEVEL,
    PRODUCED,
    PROGRESS,
    REQ_TYPE,
    SQ_WORDS,
    SRC_HI,
    SRC_LO,
    STATEFUL,
    STATUS,
    STREAM,
    ZSTD_CODE,
)
from warp.zstream import DEFAULT_MEMORY

log = logging.getLogger("warp.device")

# Plain ints for the hot path (the SQE words are warp.words'): a module global is one lookup.
_MAX_JOB: Final = abi.MAX_JOB_BYTES
_OK: Final = int(abi.Status.OK)
_SQ: Final = int(abi.DoorbellCmd.SQ)
_KICK: Final = abi.KICK
_STARTED: Final = QpState.STARTED

#: ``qm_drain_qp`` polls up to 1000 × 100–200 µs for sqc.tail == cqc.tail. A simulated engine runs
#: a slow job for longer than that, so the bound here is on progress: the drain fails once no SQE
#: completed for this long.
DRAIN_STALL_S: Final = 2.0

#: Which per-queue DFX column counts each error status.
_ERROR_COLUMN: Final = {
    int(abi.Status.ADDR_FAULT): Queue.ERR_ADDR_FAULT,
    int(abi.Status.HW_ERROR): Queue.ERR_HW,
    int(abi.Status.DST_TOO_SMALL): Queue.ERR_DST_TOO_SMALL,
    int(abi.Status.CORRUPT_INPUT): Queue.ERR_CORRUPT_INPUT,
    int(abi.Status.BAD_ALG): Queue.ERR_BAD_SQE,
    int(abi.Status.BAD_LENGTH): Queue.ERR_BAD_SQE,
    int(abi.Status.BAD_LEVEL): Queue.ERR_BAD_SQE,
    int(abi.Status.BAD_CTX): Queue.ERR_BAD_SQE,
}


@final
@dataclass
class _EngineState:
    eid: int
    codec: codec.Codec
    counters: memoryview  # the engine's DFX row (see u64)
    dictionaries: EngineDictionaries


@final
class Engines:
    """The engine threads of one device, the doorbells they wait on, and the interrupt timer."""

    def __init__(self, iommu: Iommu, dfx: Dfx, ras: Ras, pools: PoolSizes, batch: int, irq_coalesce: int,
                 irq_delay_us: int, timing: Timing | None = None, stream_memory: int = DEFAULT_MEMORY) -> None:
        self.iommu = iommu
        self.dfx = dfx
        self.batch = batch
        self.irq_coalesce = irq_coalesce
        self.faults = ras.faults
        self._ras = ras
        self._dev = dfx.dev
        self._lock = threading.Lock()
        self._by_db: dict[int, tuple[Qp, Pool]] = {}
        self._stop = threading.Event()
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)  # ends every engine's epoll wait at close
        self._moderator = Moderator(irq_coalesce, irq_delay_us * 1000) if irq_delay_us > 0 else None
        self.streams = Streams(iommu, dfx.dev, stream_memory)
        self._timing = timing if timing is not None and timing.on else None
        self._job = self._execute if self._timing is None else self._execute_timed
        self._pools = {kind: Pool(kind, pools.ids(kind), self._wake, self._run) for kind in abi.QcType}
        for kind in abi.QcType:  # before any thread runs: a reader never sees a row without its pool
            for eid in pools.ids(kind):
                dfx.engine(eid)[Engine.POOL] = kind
        for pool in self._pools.values():
            pool.start()

    def start(self, qp: Qp) -> None:
        """STARTED, and its doorbells reach the engines of its direction's pool: the direction
        goes into the SQC at start (``qm_sq_ctx_cfg``), so a SET_QP_CTX after START does not move
        the queue to the other pool, as it does not reprogram the hardware's SQC."""
        pool = self._pools[qp.qc_type]
        qp.set_state(QpState.STARTED)
        with self._lock:
            self._by_db[qp.db_fd] = (qp, pool)
        pool.join(qp.db_fd)

    def stop(self, qp: Qp) -> None:
        """``hisi_qm_stop_qp``: drain (``qm_drain_qp``), then no engine takes the queue again. A
        queue already disabled (TX/RX stop flags, ``qm_disable_qp``) has nothing to drain. A failed
        drain leaves the SQEs no engine fetched without a CQE and takes the reset path."""
        drained = qp.view.tx_stopped or self._drain(qp)
        with self._lock:
            entry = self._by_db.pop(qp.db_fd, None)
        if entry is not None:
            entry[1].leave(qp.db_fd)
        qp.set_state(QpState.STOPPED)
        qp.halt = True  # an engine inside a batch leaves it after the current job
        with qp.lock:
            tail = sq_tail(qp.latches[_SQ], qp.qid)
            left = qp.sq.pending(tail) if tail >= 0 and not drained else 0
            qp.counters[Queue.FLUSHED] += left
            qp.counters[Queue.SQ_PENDING] = 0
        if self._moderator is not None:
            self._moderator.flush(qp)
        self.streams.forget(qp.qid)
        if not drained:
            self._ras.drain_failed(qp, left)

    def _drain(self, qp: Qp) -> bool:
        """Wait until the engines completed every doorbelled SQE; False once none completed for
        ``DRAIN_STALL_S`` (``qm_drain_qp``'s "Fail to empty queue")."""
        qp.device_kicks += 1
        os.eventfd_write(qp.db_fd, 1)  # an engine takes the queue even if its doorbell was read
        head, progress = qp.sq.head, time.monotonic()
        while True:
            tail = sq_tail(qp.latches[_SQ], qp.qid)
            if tail < 0 or not qp.sq.pending(tail) or qp.view.tx_stopped:
                return True
            now = time.monotonic()
            if qp.sq.head != head:
                head, progress = qp.sq.head, now
            elif now - progress > DRAIN_STALL_S:
                return False
            time.sleep(0.001)

    def close(self) -> None:
        self._stop.set()
        os.eventfd_write(self._wake, 1)
        for pool in self._pools.values():
            pool.close(timeout=5)
        if self._moderator is not None:
            self._moderator.close()
        os.close(self._wake)

    # ---- one engine ------------------------------------------------------------------------
    def _run(self, pool: Pool, eid: int) -> None:
        counters = u64(self.dfx.engine(eid))
        worker = _EngineState(eid=eid, codec=codec.Codec(), counters=counters,
                              dictionaries=EngineDictionaries(self.iommu, counters))
        faults = self.faults
        while not self._stop.is_set():
            if faults.hang_until and self._hung():
                continue
            try:
                events = pool.epoll.poll(0.2)
            except (OSError, ValueError):
                return
            for fd, _mask in events:
                if fd == self._wake:
                    break
                with self._lock:
                    entry = self._by_db.get(fd)
                if entry is not None:
                    self._turn(entry[0], fd, worker, entry[1])

    def _hung(self) -> bool:
        """An injected hang: fetch nothing (doorbells stay pending in epoll) while it lasts."""
        faults = self.faults
        if faults.hung():
            self._stop.wait(min(faults.hang_until - time.monotonic(), 0.05))
            return True
        self._ras.end_hang()
        return False

    def _turn(self, qp: Qp, fd: int, worker: _EngineState, pool: Pool) -> None:
        """Serve one doorbelled queue for one batch, then rearm its doorbell."""
        with qp.lock:
            if qp.state is not _STARTED:
                return
            try:
                kicks = os.eventfd_read(fd)
            except BlockingIOError:
                kicks = 0
            if qp.device_kicks:
                kicks = max(kicks - qp.device_kicks, 0)
                qp.device_kicks = 0
            if kicks:
                qp.counters[Queue.DOORBELLS] += kicks
            qp.latches[_KICK] = 0  # awake on this queue: doorbells need no kick
            try:
                more = self._serve(qp, worker, self.batch) or _doorbelled_while_idling(qp)
            except Exception:  # a device bug must cost one queue, never the engine
                log.exception("engine %d: queue %d disabled after an internal error", worker.eid, qp.qid)
                qp.view.stop()
                more = False
            if more and qp.state is _STARTED:
                qp.device_kicks += 1
                os.eventfd_write(fd, 1)  # back of the ready list: round-robin
            pool.rearm(fd)

    def _serve(self, qp: Qp, worker: _EngineState, budget: int) -> bool:
        """Fetch up to ``budget`` doorbelled SQEs and complete them in order; True if more wait."""
        qp.halt = False  # before the checks: a state change after them raises it again
        if qp.view.tx_stopped or qp.state is not _STARTED:
            return False
        if self.faults.hang_until and self.faults.hung():
            return True
        tail = sq_tail(qp.latches[_SQ], qp.qid)
        if tail < 0:
            return False  # no valid SQ doorbell yet
        armed = bool(cq_doorbell(qp) & 1)
        sq, cq = qp.sq, qp.cq
        pending = sq.pending(tail)
        take = min(pending, budget)
        if not take:
            qp.counters[Queue.SQ_PENDING] = 0
            return False
        if pending + (cq.tail - cq.head) % cq.depth >= sq.depth - 1:
            qp.counters[Queue.SEND_BUSY] += 1  # the producer's next send finds the SQ full
        return self._batch(qp, worker, take, pending, armed)

    def _batch(self, qp: Qp, worker: _EngineState, take: int, pending: int, armed: bool) -> bool:
        """Run and complete ``take`` SQEs of the ``pending`` ones; True if more wait.

        Counters are summed in locals and stored once per batch (:meth:`_record`): a numpy scalar
        update costs about as much as the rest of a small job's bookkeeping. The only per-job test
        beyond the job itself is ``qp.halt``, which stop, isolation and fault injection raise.
        """
        started = time.monotonic_ns()
        view = qp.view
        words = view.sq
        cqv = view.cq
        sq, cq = qp.sq, qp.cq
        qid = qp.qid
        execute = self._job
        bytes_in = bytes_out = ok = faults = done = unsignalled = 0
        errs: dict[int, int] | None = None
        moderator = self._moderator
        timed = armed and moderator is not None
        counted = armed and moderator is None
        coalesce = self.irq_coalesce
        per_job = self.faults.per_job
        try:
            for _ in range(take):
                if qp.halt:
                    if qp.state is not _STARTED or view.tx_stopped or self.faults.hung():
                        break
                    per_job = self.faults.per_job
                slot = sq.pop()
                base = slot * SQ_WORDS
                if per_job:
                    status, consumed, produced, job_faults = self._execute_injected(qp, words, base, worker)
                else:
                    status, consumed, produced, job_faults = execute(qp, words, base, worker)
                words[base + CONSUMED] = consumed
                words[base + PRODUCED] = produced
                words[base + STATUS] = (words[base + STATUS] & ~0xFF) | status
                try:
                    cq.post(cqv, slot, qid)
                except RingOverflow:
                    self._dev[Dev.CQ_OVERFLOWS] += 1
                    qp.counters[Queue.CQ_OVERFLOWS] += 1
                    self._ras.cq_overflow(qp)  # an AEQE: the QM driver disables the queue
                    return False
                done += 1
                if status and status not in PROGRESS:
                    if errs is None:
                        errs = {}
                    errs[status] = errs.get(status, 0) + 1
                else:
                    ok += 1
                bytes_in += consumed
                bytes_out += produced
                faults += job_faults
                if counted:
                    unsignalled += 1
                    if unsignalled >= coalesce:
                        interrupt(qp)
                        unsignalled = 0
                elif timed:
                    assert moderator is not None
                    moderator.completed(qp)
        finally:
            self._record(qp, worker, started, pending, done, ok, bytes_in, bytes_out, faults, errs, unsignalled)
        return pending > done

    @staticmethod
    def _record(qp: Qp, worker: _EngineState, started: int, pending: int, done: int, ok: int, bytes_in: int,
                bytes_out: int, faults: int, errs: dict[int, int] | None, unsignalled: int) -> None:
        """Store one batch's sums in the queue's and the engine's DFX rows, and raise the
        interrupt for completions not signalled yet (the batch end)."""
        c = qp.counters
        failed = done - ok
        c[Queue.SUBMITTED] += done
        c[Queue.COMPLETED_OK] += ok
        c[Queue.BYTES_IN] += bytes_in
        c[Queue.BYTES_OUT] += bytes_out
        c[Queue.IOPF] += faults
        c[Queue.BATCHES] += 1
        c[Queue.SQ_PENDING] = pending - done
        if errs is not None:
            c[Queue.COMPLETED_ERR] += failed
            c[Queue.ERR_BD] += failed
            for status, count in errs.items():
                column = _ERROR_COLUMN.get(status)
                if column is not None:
                    c[column] += count
        if unsignalled:
            interrupt(qp)
        e = worker.counters
        e[Engine.JOBS] += done
        e[Engine.BATCHES] += 1
        e[Engine.BUSY_NS] += time.monotonic_ns() - started
        e[Engine.BYTES_IN] += bytes_in
        if bytes_out:
            e[Engine.BYTES_OUT] += bytes_out
        if failed:
            e[Engine.ERRORS] += failed
        if faults:
            e[Engine.IOPF] += faults

    # ---- one job ---------------------------------------------------------------------------
    def _execute(self, qp: Qp, w: memoryview, base: int, worker: _EngineState) -> tuple[int, int, int, int]:
        """Run the SQE at word ``base``: ``(status, consumed, produced, faults)``. Bad SQEs fail, never raise."""
        if w[base + REQ_TYPE] & 0xFF != ZSTD_CODE:
            return lz77.execute(self.iommu, qp, w, base)  # lz77_zstd, or BAD_ALG
        length = w[base + INPUT_LEN]
        capacity = w[base + DEST_AVAIL]
        if length > _MAX_JOB or capacity > _MAX_JOB:
            return abi.Status.BAD_LENGTH, 0, 0, 0
        level = w[base + LEVEL]
        if level & 0x80000000:
            level -= 1 << 32
        if not abi.LEVEL_MIN <= level <= abi.LEVEL_MAX:
            return abi.Status.BAD_LEVEL, 0, 0, 0
        if w[base + STREAM] & STATEFUL:
            return self.streams.execute(qp, w, base, level)
        src = w[base + SRC_LO] | w[base + SRC_HI] << 32
        dst = w[base + DST_LO] | w[base + DST_HI] << 32
        loaded, faults = None, 0
        try:
            if w[base + FLAGS] & DICT:  # the dictionary first: the engine needs it before the source
                loaded, faults = worker.dictionaries.load(qp, w, base, level)
                if loaded is None:
                    return abi.Status.BAD_LENGTH, 0, 0, 0
            source, target, job_faults = self.iommu.translate_job(qp.mapping, src, length, dst, capacity)
        except TranslationFault as fault:
            return abi.Status.ADDR_FAULT, 0, 0, faults + fault.pages
        faults += job_faults
        if target == STAGED:
            return self._staged(qp, worker, source, length, dst, capacity, level, bool(w[base + FLAGS] & CHECKSUM),
                                faults, loaded)
        status, produced = worker.codec.run(qp.qc_type, qp.memory + target, capacity, qp.memory + source, length,
                                            level, bool(w[base + FLAGS] & CHECKSUM), loaded)
        return status, (length if status == _OK else 0), produced, faults

    def _staged(self, qp: Qp, worker: _EngineState, source: int, length: int, dst: int, capacity: int, level: int,
                checksum: bool, faults: int, loaded: object) -> tuple[int, int, int, int]:
        """A job whose destination has pages the engine cannot write yet (:mod:`warp.device.staging`)."""
        try:
            (status, produced), more = staged(
                self.iommu, qp.mapping, dst, capacity,
                lambda out: worker.codec.run(qp.qc_type, out, capacity, qp.memory + source, length, level, checksum,
                                             loaded))
        except TranslationFault as fault:
            return abi.Status.ADDR_FAULT, 0, 0, faults + fault.pages
        return status, (length if status == _OK else 0), produced, faults + more

    def _execute_injected(self, qp: Qp, w: memoryview, base: int,
                          worker: _EngineState) -> tuple[int, int, int, int]:
        """A job while faults are injected: it may hit a hardware error, or take ``factor`` x its time."""
        if self.faults.take_hw_error():
            self._ras.hw_error(qp)
            return abi.Status.HW_ERROR, 0, 0, 0
        factor = self.faults.slow_factor
        if factor == 1.0:
            return self._job(qp, w, base, worker)
        started = time.monotonic()
        result = self._job(qp, w, base, worker)
        self._stop.wait((factor - 1.0) * (time.monotonic() - started))
        return result

    def _execute_timed(self, qp: Qp, w: memoryview, base: int, worker: _EngineState) -> tuple[int, int, int, int]:
        """A job under the timing model: it takes max(real time, modelled time). The engine
        sleeps out the difference rather than spinning, so modelled engines cost no CPU and the
        saturation of a pool is visible on a machine shared with other work; close ends the sleep."""
        assert self._timing is not None  # chosen as the job only with a model
        started = time.monotonic_ns()
        result = self._execute(qp, w, base, worker)
        left = started + self._timing.cost_ns(qp.qc_type, result[1], result[2]) - time.monotonic_ns()
        if left > 0:
            self._stop.wait(left / 1e9)
        return result


def _doorbelled_while_idling(qp: Qp) -> bool:
    """Going idle: ask for kicks again, then look at the latch once more, for a doorbell
    rung while the word still said "awake" (the other half of :func:`warp.abi.fence`)."""
    latches = qp.latches
    latches[_KICK] = 1
    abi.fence()
    tail = sq_tail(latches[_SQ], qp.qid)
    if tail < 0 or qp.state is not _STARTED or qp.view.tx_stopped or not qp.sq.pending(tail):
        return False
    latches[_KICK] = 0
    return True
