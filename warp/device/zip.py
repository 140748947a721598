"""The zstd accelerator behind the uacce core: queue pairs, engines, ring processing, interrupts,
hardware errors and isolation, injected faults.

Queue memory (MMIO doorbell page and DUS rings) is a memfd per queue pair, created when the queue
is taken: a memfd mapping cannot be revoked from the other process, so a fresh one per get_queue
gives the guarantee that ``unmap_mapping_range`` gives the kernel — a process that put its queue
cannot write into the next owner's rings.

Engines share one epoll set of doorbell eventfds registered EPOLLONESHOT: a doorbelled queue goes
to exactly one engine (so completions stay in order per queue), which fetches at most ``batch``
SQEs, posts their CQEs, raises its interrupts (moderated by count, and by time with
``irq_delay_us``), and — if SQEs remain — kicks the queue again so it rejoins the ready list behind
the others (round-robin arbitration).

Stopping a queue (PUT_Q or close) never loses a job: the job an engine is running finishes, and
every SQE doorbelled but not yet fetched completes with ``QUEUE_STOPPED``. Hardware errors are
counted against ``isolate_strategy``; isolation sets every queue's TX/RX stop flags, and a
controller reset (control socket) clears them.
"""

from __future__ import annotations

import errno
import logging
import math
import mmap
import os
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, final

import numpy as np
import numpy.typing as npt

from warp import abi, cdev, codec
from warp.device.control import Reply
from warp.device.faults import CRASH_STATUS, ErrorLog, Injected, Reclaimer
from warp.device.irq import Moderator
from warp.dfx import Dev, Dfx, Engine, Queue
from warp.iommu.mmu import Iommu, Mapping, TranslationFault
from warp.ring import CqProducer, DusView, RingOverflow, SqConsumer

ALGORITHMS: Final = ("zstd",)
log = logging.getLogger("warp.device")

# Plain ints for the hot path: a module global is one lookup, ``abi.W.CONSUMED`` three.
_SQ_WORDS: Final = abi.SQ_WORDS
_CONSUMED: Final = int(abi.W.CONSUMED)
_PRODUCED: Final = int(abi.W.PRODUCED)
_STATUS: Final = int(abi.W.STATUS)
_INPUT_LEN: Final = int(abi.W.INPUT_LEN)
_REQ_TYPE: Final = int(abi.W.REQ_TYPE)
_LEVEL: Final = int(abi.W.LEVEL)
_FLAGS: Final = int(abi.W.FLAGS)
_DEST_AVAIL: Final = int(abi.W.DEST_AVAIL)
_SRC_LO: Final = int(abi.W.SRC_LO)
_SRC_HI: Final = int(abi.W.SRC_HI)
_DST_LO: Final = int(abi.W.DST_LO)
_DST_HI: Final = int(abi.W.DST_HI)
_ZSTD: Final = int(abi.Alg.ZSTD)
_MAX_JOB: Final = abi.MAX_JOB_BYTES
_CHECKSUM: Final = abi.FLAG_CHECKSUM
_OK: Final = int(abi.Status.OK)
_SQ: Final = int(abi.DoorbellCmd.SQ)
_CQ: Final = int(abi.DoorbellCmd.CQ)
_KICK: Final = abi.KICK

#: Which per-queue DFX column counts each error status.
_ERROR_COLUMN: Final = {
    int(abi.Status.ADDR_FAULT): Queue.ERR_ADDR_FAULT,
    int(abi.Status.HW_ERROR): Queue.ERR_HW,
    int(abi.Status.DST_TOO_SMALL): Queue.ERR_DST_TOO_SMALL,
    int(abi.Status.CORRUPT_INPUT): Queue.ERR_CORRUPT_INPUT,
    int(abi.Status.BAD_ALG): Queue.ERR_BAD_SQE,
    int(abi.Status.BAD_LENGTH): Queue.ERR_BAD_SQE,
    int(abi.Status.BAD_LEVEL): Queue.ERR_BAD_SQE,
}

#: Largest slow-down ``inject slow`` accepts.
MAX_SLOW_FACTOR: Final = 1000.0


@final
@dataclass(eq=False)
class Qp:
    """One hardware queue pair and everything the engines need to serve it.

    ``lock`` is held by the engine serving the queue (one at a time) and by a stop; ``irq_lock``
    guards what the interrupt timer, isolation and reset share with it, and ``closed``.
    """

    qid: int
    mapping: Mapping
    counters: memoryview  # the queue's DFX row (see _u64)
    mmio_fd: int
    dus_fd: int
    mmio: mmap.mmap
    dus: mmap.mmap
    view: DusView
    latches: memoryview  # the four doorbell latches and the kick word (see _u64)
    db_fd: int
    irq_fd: int
    memory: codec.Pointer
    sq: SqConsumer = field(default_factory=SqConsumer)
    cq: CqProducer = field(default_factory=CqProducer)
    qc_type: abi.QcType = abi.QcType.COMPRESS
    lock: threading.Lock = field(default_factory=threading.Lock)
    running: bool = False
    halt: bool = False  # leave the batch loop at the next job boundary and look at the device state
    device_kicks: int = 0  # doorbell kicks the device wrote itself (not counted as doorbells)
    closed: bool = False
    irq_lock: threading.Lock = field(default_factory=threading.Lock)
    irq_count: int = 0  # completions not yet signalled (time moderation)
    irq_deadline: int = 0

    def close(self) -> None:
        with self.irq_lock:
            self.closed = True
        codec.release(self.memory)
        self.view.release()
        self.latches.release()
        self.mmio.close()
        self.dus.close()
        for fd in (self.mmio_fd, self.dus_fd, self.db_fd, self.irq_fd):
            os.close(fd)


@final
class ZipDevice:
    """``uacce_ops`` of the zstd device plus its engines, error handling and fault injection."""

    name = "warp_zip-0"
    algorithms: tuple[str, ...] = ALGORITHMS

    def __init__(self, iommu: Iommu, dfx: Dfx, engines: int = 1, batch: int = 32, irq_coalesce: int = 4,
                 irq_delay_us: int = 0, reclaim_interval_ms: float = 0, reclaim_fraction: float = 0.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.iommu = iommu
        self.dfx = dfx
        self.batch = batch
        self.irq_coalesce = irq_coalesce
        self.faults = Injected()
        self.errors = ErrorLog(clock)
        self._dev = dfx.dev
        self._dev[Dev.SLOW_FACTOR_MILLI] = 1000
        self._notify: Callable[[], None] = lambda: None
        self._lock = threading.Lock()
        self._err_lock = threading.Lock()
        self._free = list(range(dfx.queues))
        self._qps: dict[int, Qp] = {}
        self._by_db: dict[int, Qp] = {}
        self._epoll = select.epoll()
        self._stop = threading.Event()
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)  # ends every engine's epoll wait at close
        self._epoll.register(self._wake, select.EPOLLIN)
        self._moderator = Moderator(irq_coalesce, irq_delay_us * 1000) if irq_delay_us > 0 else None
        self._reclaimer = (Reclaimer(iommu, reclaim_interval_ms / 1000, reclaim_fraction, self._reclaimed)
                           if reclaim_interval_ms > 0 and reclaim_fraction > 0 else None)
        self._engines = [threading.Thread(target=self._engine, args=(i,), name=f"engine-{i}", daemon=True)
                         for i in range(engines)]
        for thread in self._engines:
            thread.start()
        if self._reclaimer is not None:
            self._reclaimer.start()

    # ---- uacce_ops -------------------------------------------------------------------------
    def set_notifier(self, notify: Callable[[], None]) -> None:
        """The core's sysfs refresh, called when ``isolate`` or ``available_instances`` change."""
        self._notify = notify

    def available_instances(self) -> int:
        with self._lock:
            return len(self._free)

    def isolated(self) -> bool:
        return bool(self._dev[Dev.ISOLATED])

    def isolate_err_threshold_read(self) -> int:
        return self.errors.threshold

    def isolate_err_threshold_write(self, threshold: int) -> None:
        """A write of ``isolate_strategy``: refused while isolated (EPERM), validated (EINVAL),
        and a valid one starts a fresh error list, as the QM driver does."""
        with self._err_lock:
            if self.isolated():
                raise OSError(errno.EPERM, "the device is isolated; reset it first")
            try:
                self.errors.set_threshold(threshold)
            except ValueError as exc:
                raise OSError(errno.EINVAL, str(exc)) from None
            self._dev[Dev.ISOLATE_STRATEGY] = threshold
            self._dev[Dev.HW_ERRORS_WINDOW] = 0

    def get_queue(self, mapping: Mapping) -> Qp:
        with self._lock:
            if not self._free:
                raise OSError(errno.EBUSY, f"all {self.dfx.queues} queues are busy")
            qid = self._free.pop(0)
        mmio_fd = _memfd(f"warp-qp{qid}-mmio", abi.MMIO_SIZE)
        dus_fd = _memfd(f"warp-qp{qid}-dus", abi.DUS_SIZE)
        mmio = mmap.mmap(mmio_fd, abi.MMIO_SIZE)
        dus = mmap.mmap(dus_fd, abi.DUS_SIZE)
        latches = _u64(abi.doorbell_words(mmio))
        latches[abi.KICK] = 1  # no engine awake on it: the first doorbell must kick
        counters = _u64(self.dfx.queue(qid))  # counters are cumulative per queue pair, across owners
        counters[Queue.SQ_PENDING] = 0
        counters[Queue.PASID] = mapping.pasid
        counters[Queue.STATE] = 1
        qp = Qp(qid=qid, mapping=mapping, counters=counters, mmio_fd=mmio_fd, dus_fd=dus_fd, mmio=mmio,
                dus=dus, view=DusView.over(memoryview(dus)), latches=latches,
                db_fd=os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC),
                irq_fd=os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC),
                memory=codec.pointer(mapping.heap))
        with self._lock:
            self._qps[qid] = qp
        return qp

    def put_queue(self, qp: Qp) -> None:
        qp.counters[Queue.STATE] = 0
        qp.counters[Queue.PASID] = 0
        with self._lock:
            self._qps.pop(qp.qid, None)
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
        """``hisi_qm_stop_qp``: no engine takes the queue again; the job an engine is running
        finishes (the drain), and every SQE doorbelled but not fetched completes QUEUE_STOPPED."""
        with self._lock:
            self._by_db.pop(qp.db_fd, None)
        try:
            self._epoll.unregister(qp.db_fd)
        except (OSError, ValueError):
            pass
        qp.running = False
        qp.halt = True  # an engine inside a batch leaves it after the current job
        with qp.lock:
            self._flush(qp)
        if self._moderator is not None:
            self._moderator.flush(qp)
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
        if message.get("op") == "set_qp_info":  # UACCE_CMD_QM_SET_QP_INFO: the kernel reports the geometry
            return {"sqe_size": abi.SQE_SIZE, "sq_depth": abi.QUEUE_DEPTH, "cq_depth": abi.QUEUE_DEPTH}
        raise OSError(errno.EINVAL, f"unknown ioctl {message.get('op')!r}")

    def irq_fd(self, qp: Qp) -> int:
        return qp.irq_fd

    def close(self) -> None:
        self._stop.set()
        os.eventfd_write(self._wake, 1)
        if self._reclaimer is not None:
            self._reclaimer.close()
        for thread in self._engines:
            thread.join(timeout=5)
        if self._moderator is not None:
            self._moderator.close()
        self._epoll.close()
        os.close(self._wake)

    # ---- control: fault injection and reset ------------------------------------------------
    def control(self, message: cdev.Message) -> Reply:
        """One request from the control socket (see ``warp.device.control``)."""
        cmd = message.get("cmd")
        if cmd == "reset":
            return {"resets": self.reset()}, None
        if cmd == "status":
            return self.fault_state(), None
        if cmd != "inject":
            raise OSError(errno.EINVAL, f"unknown control command {cmd!r}")
        fault = message.get("fault")
        reply: cdev.Message
        after: Callable[[], None] | None = None
        if fault == "hang":
            seconds = message.get("seconds")
            if seconds is not None and not (math.isfinite(float(seconds)) and float(seconds) >= 0):
                raise OSError(errno.EINVAL, "--seconds must be a finite number >= 0")
            self.faults.hang(None if seconds is None else float(seconds))
            self._dev[Dev.HUNG] = 1
            reply = {"hang_seconds": seconds}
        elif fault == "hw-error":
            count = int(message.get("count", 1))
            if count < 1:
                raise OSError(errno.EINVAL, "--count must be at least 1")
            self.faults.add_hw_errors(count)
            self._dev[Dev.HW_ERRORS_PENDING] = self.faults.hw_errors
            reply = {"hw_errors_pending": self.faults.hw_errors}
        elif fault == "iopf-storm":
            pages = self.iommu.reclaim(1.0)
            self._reclaimed(pages)
            reply = {"pages": pages}
        elif fault == "slow":
            factor = float(message.get("factor", 0))
            if not 1.0 <= factor <= MAX_SLOW_FACTOR:
                raise OSError(errno.EINVAL, f"--factor must be within 1..{MAX_SLOW_FACTOR:g}")
            self.faults.slow_factor = factor
            self._dev[Dev.SLOW_FACTOR_MILLI] = round(factor * 1000)
            reply = {"factor": factor}
        elif fault == "crash":
            reply = {"exit": CRASH_STATUS}
            after = _crash
        else:
            raise OSError(errno.EINVAL, f"unknown fault {fault!r}")
        self._dev[Dev.INJECTIONS] += 1
        log.warning("injected fault %s: %s", fault, reply)
        self._halt_all()  # batches in progress look at the new state at their next job
        return reply, after

    def fault_state(self) -> cdev.Message:
        until = self.faults.hang_until
        return {"isolated": self.isolated(), "hung": self.faults.hung(),
                "hang_remaining": None if until == math.inf else max(until - time.monotonic(), 0.0) if until else 0.0,
                "hw_errors_pending": self.faults.hw_errors, "slow_factor": self.faults.slow_factor,
                "isolate_strategy": self.errors.threshold, "hw_errors_in_window": self.errors.in_window()}

    def reset(self) -> int:
        """Controller reset: clear isolation, injected faults, the error list and every queue's
        stop flags; queues keep their ring state and resume (a warm reset). Returns the count."""
        with self._err_lock:
            self.faults.clear()
            self.errors.clear()
            dev = self._dev
            dev[Dev.ISOLATED] = 0
            dev[Dev.HUNG] = 0
            dev[Dev.HW_ERRORS_PENDING] = 0
            dev[Dev.SLOW_FACTOR_MILLI] = 1000
            dev[Dev.HW_ERRORS_WINDOW] = 0
            dev[Dev.RESETS] += 1
            resets = int(dev[Dev.RESETS])
        with self._lock:
            qps = list(self._qps.values())
        for qp in qps:
            with qp.irq_lock:
                if not qp.closed:
                    qp.view.status[0] = 0
                    qp.view.status[1] = 0
        for qp in qps:  # whatever waited in a stopped SQ is fetched again
            with qp.lock:
                if qp.running and not qp.closed:
                    qp.device_kicks += 1
                    os.eventfd_write(qp.db_fd, 1)
        log.warning("controller reset #%d: isolation, injected faults and stop flags cleared", resets)
        self._notify()
        return resets

    def _halt_all(self) -> None:
        with self._lock:
            for qp in self._qps.values():
                qp.halt = True

    def _reclaimed(self, pages: int) -> None:
        self._dev[Dev.RECLAIMED_PAGES] += pages
        self._dev[Dev.RECLAIM_PASSES] += 1

    def _hw_error(self, qp: Qp) -> None:
        """A job hit a hardware error: count it, time-stamp it, and isolate past the threshold."""
        now_ns = time.time_ns()
        with self._err_lock:
            isolate = self.errors.record() and not self.isolated()
            dev = self._dev
            dev[Dev.HW_ERRORS] += 1
            dev[Dev.LAST_HW_ERROR_NS] = now_ns
            dev[Dev.HW_ERRORS_WINDOW] = self.errors.in_window()
            dev[Dev.HW_ERRORS_PENDING] = self.faults.hw_errors
            if isolate:
                dev[Dev.ISOLATED] = 1
                dev[Dev.ISOLATIONS] += 1
        log.error("hardware error on queue %d (%d in the last hour, isolate_strategy %d)",
                  qp.qid, self.errors.in_window(), self.errors.threshold)
        if isolate:
            self._isolate()

    def _isolate(self) -> None:
        """Every queue pair is disabled (TX/RX stop flags, as ``qm_disable_qp``) and woken."""
        with self._lock:
            qps = list(self._qps.values())
        for qp in qps:
            with qp.irq_lock:
                if qp.closed:
                    continue
                qp.view.stop()
                qp.halt = True
                os.eventfd_write(qp.irq_fd, 1)  # wake a sleeping user: it finds the RX flag
                qp.counters[Queue.INTERRUPTS] += 1
        log.error("device isolated: more than %d hardware errors within %d s", self.errors.threshold,
                  self.errors.window)
        self._notify()

    # ---- engines ---------------------------------------------------------------------------
    def _engine(self, eid: int) -> None:
        row = self.dfx.engine(eid)
        worker = _EngineState(eid=eid, codec=codec.Codec(), counters=_u64(row))
        faults = self.faults
        while not self._stop.is_set():
            if faults.hang_until:  # injected hang: fetch nothing, doorbells stay pending in epoll
                if faults.hung():
                    self._stop.wait(min(faults.hang_until - time.monotonic(), 0.05))
                    continue
                if faults.end_hang():
                    self._dev[Dev.HUNG] = 0
                    log.warning("injected hang is over")
            try:
                events = self._epoll.poll(0.2)
            except (OSError, ValueError):
                return
            for fd, _mask in events:
                if fd == self._wake:
                    break
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
                    if qp.device_kicks:
                        kicks = max(kicks - qp.device_kicks, 0)
                        qp.device_kicks = 0
                    if kicks:
                        qp.counters[Queue.DOORBELLS] += kicks
                    qp.latches[_KICK] = 0  # awake on this queue: doorbells need no kick
                    try:
                        more = self._serve(qp, worker, self.batch) or self._doorbelled_while_idling(qp)
                    except Exception:  # a device bug must cost one queue, never the engine
                        log.exception("engine %d: queue %d disabled after an internal error", eid, qp.qid)
                        qp.view.stop()
                        more = False
                    if more and qp.running:
                        qp.device_kicks += 1
                        os.eventfd_write(fd, 1)  # back of the ready list: round-robin
                    try:
                        self._epoll.modify(fd, select.EPOLLIN | select.EPOLLONESHOT)
                    except (OSError, ValueError):
                        pass

    @staticmethod
    def _doorbelled_while_idling(qp: Qp) -> bool:
        """Going idle: ask for kicks again, then look at the latch once more, for a doorbell
        rung while the word still said "awake" (the other half of :func:`warp.abi.fence`)."""
        latches = qp.latches
        latches[_KICK] = 1
        abi.fence()
        tail = _sq_tail(latches[_SQ], qp.qid)
        if tail < 0 or not qp.running or qp.view.tx_stopped or not qp.sq.pending(tail):
            return False
        latches[_KICK] = 0
        return True

    def _serve(self, qp: Qp, worker: _EngineState, budget: int) -> bool:
        """Fetch up to ``budget`` doorbelled SQEs and complete them in order; True if more wait.

        Counters are summed in locals and stored once per batch: a numpy scalar update costs
        about as much as the rest of a small job's bookkeeping. The only per-job test beyond the
        job itself is ``qp.halt``, which stop, isolation and fault injection raise.
        """
        qp.halt = False  # before the checks: a state change after them raises it again
        view = qp.view
        if view.tx_stopped or not qp.running:
            return False
        if self.faults.hang_until and self.faults.hung():
            return True
        c = qp.counters
        tail = _sq_tail(qp.latches[_SQ], qp.qid)
        if tail < 0:
            return False  # no valid SQ doorbell yet
        cq_prio = self._cq_doorbell(qp)
        sq, cq = qp.sq, qp.cq
        pending = sq.pending(tail)
        take = min(pending, budget)
        if not take:
            c[Queue.SQ_PENDING] = 0
            return False
        if pending + (cq.tail - cq.head) % cq.depth >= sq.depth - 1:
            c[Queue.SEND_BUSY] += 1  # the producer's next send finds the SQ full
        started = time.monotonic_ns()
        words = view.sq
        cqv = view.cq
        qid = qp.qid
        execute = self._execute
        bytes_in = bytes_out = ok = faults = done = unsignalled = 0
        errs: dict[int, int] | None = None
        armed = bool(cq_prio & 1)
        moderator = self._moderator
        timed = armed and moderator is not None
        counted = armed and moderator is None
        coalesce = self.irq_coalesce
        per_job = self.faults.per_job
        try:
            for _ in range(take):
                if qp.halt:
                    if not qp.running or view.tx_stopped or self.faults.hung():
                        break
                    per_job = self.faults.per_job
                slot = sq.pop()
                base = slot * _SQ_WORDS
                if per_job:
                    status, consumed, produced, job_faults = self._execute_injected(qp, words, base, worker)
                else:
                    status, consumed, produced, job_faults = execute(qp, words, base, worker)
                words[base + _CONSUMED] = consumed
                words[base + _PRODUCED] = produced
                words[base + _STATUS] = (words[base + _STATUS] & ~0xFF) | status
                try:
                    cq.post(cqv, slot, qid)
                except RingOverflow:
                    self._dev[Dev.CQ_OVERFLOWS] += 1
                    c[Queue.CQ_OVERFLOWS] += 1
                    view.stop()  # QM_CQ_OVERFLOW: the queue is disabled, as qm_disable_qp
                    return False
                done += 1
                if status:
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
                        self._interrupt(qp)
                        unsignalled = 0
                elif timed:
                    assert moderator is not None
                    moderator.completed(qp)
        finally:
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
                self._interrupt(qp)
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
        return pending > done

    def _flush(self, qp: Qp) -> None:
        """Complete every doorbelled SQE no engine fetched with QUEUE_STOPPED (``qp.lock`` held)."""
        c = qp.counters
        view = qp.view
        tail = _sq_tail(qp.latches[_SQ], qp.qid)
        c[Queue.SQ_PENDING] = 0
        if tail < 0:
            return
        cq_prio = self._cq_doorbell(qp)
        words = view.sq
        pending = qp.sq.pending(tail)
        flushed = 0
        for _ in range(pending):
            slot = qp.sq.pop()
            base = slot * _SQ_WORDS
            words[base + _CONSUMED] = 0
            words[base + _PRODUCED] = 0
            words[base + _STATUS] = (words[base + _STATUS] & ~0xFF) | abi.Status.QUEUE_STOPPED
            try:
                qp.cq.post(view.cq, slot, qp.qid)
            except RingOverflow:
                lost = pending - flushed
                self._dev[Dev.CQ_OVERFLOWS] += lost
                c[Queue.CQ_OVERFLOWS] += lost
                view.stop()
                break
            flushed += 1
        if not flushed:
            return
        c[Queue.FLUSHED] += flushed
        c[Queue.COMPLETED_ERR] += flushed
        log.info("queue %d stopped with %d SQE(s) unfetched: completed QUEUE_STOPPED", qp.qid, flushed)
        if cq_prio & 1:
            if self._moderator is not None:
                self._moderator.completed(qp, flushed)
            else:
                self._interrupt(qp)

    @staticmethod
    def _cq_doorbell(qp: Qp) -> int:
        """Apply the CQ doorbell latch (slots before its index are free again); its priority.

        A latch that is not a CQ doorbell of this queue, or whose index is past the ring, is
        ignored (interrupts stay off), as hardware ignores a doorbell it cannot decode.
        """
        word: int = qp.latches[_CQ]
        if word & 0xFFF != qp.qid or (word >> 12) & 0xF != _CQ or (word >> 32) & 0xFFFF >= qp.cq.depth:
            return 0
        qp.cq.doorbell((word >> 32) & 0xFFFF)
        return word >> 48

    @staticmethod
    def _interrupt(qp: Qp) -> None:
        """Raise the queue's interrupt (moderated: once per ``irq_coalesce`` CQEs and per batch end)."""
        os.eventfd_write(qp.irq_fd, 1)
        qp.counters[Queue.INTERRUPTS] += 1

    def _execute(self, qp: Qp, w: memoryview, base: int, worker: _EngineState) -> tuple[int, int, int, int]:
        """Run the SQE at word ``base``: ``(status, consumed, produced, faults)``. Bad SQEs fail, never raise."""
        if w[base + _REQ_TYPE] & 0xFF != _ZSTD:
            return abi.Status.BAD_ALG, 0, 0, 0
        length = w[base + _INPUT_LEN]
        capacity = w[base + _DEST_AVAIL]
        if length > _MAX_JOB or capacity > _MAX_JOB:
            return abi.Status.BAD_LENGTH, 0, 0, 0
        level = w[base + _LEVEL]
        if level & 0x80000000:
            level -= 1 << 32
        if not abi.LEVEL_MIN <= level <= abi.LEVEL_MAX:
            return abi.Status.BAD_LEVEL, 0, 0, 0
        src = w[base + _SRC_LO] | w[base + _SRC_HI] << 32
        dst = w[base + _DST_LO] | w[base + _DST_HI] << 32
        try:
            source, target, faults = self.iommu.translate_job(qp.mapping, src, length, dst, capacity)
        except TranslationFault as fault:
            return abi.Status.ADDR_FAULT, 0, 0, fault.pages
        status, produced = worker.codec.run(qp.qc_type, qp.memory + target, capacity, qp.memory + source, length,
                                            level, bool(w[base + _FLAGS] & _CHECKSUM))
        return status, (length if status == _OK else 0), produced, faults

    def _execute_injected(self, qp: Qp, w: memoryview, base: int,
                          worker: _EngineState) -> tuple[int, int, int, int]:
        """A job while faults are injected: it may hit a hardware error, or take ``factor`` x its time."""
        if self.faults.take_hw_error():
            self._hw_error(qp)
            return abi.Status.HW_ERROR, 0, 0, 0
        factor = self.faults.slow_factor
        if factor == 1.0:
            return self._execute(qp, w, base, worker)
        started = time.monotonic()
        result = self._execute(qp, w, base, worker)
        self._stop.wait((factor - 1.0) * (time.monotonic() - started))
        return result


@final
@dataclass
class _EngineState:
    eid: int
    codec: codec.Codec
    counters: memoryview  # the engine's DFX row (see _u64)


def _u64(words: npt.NDArray[np.uint64]) -> memoryview:
    """The same shared words as a memoryview of u64: reading or updating an element costs a
    third of a numpy scalar's (the engines touch ~20 per batch), and an aligned 8-byte element
    store is still one store instruction, as DESIGN's rule for shared words asks."""
    return words.data.cast("B").cast("Q")


def _sq_tail(word: int, qid: int) -> int:
    """The tail of an SQ doorbell latch word (v2 encoding), or -1 if it is not a valid SQ doorbell
    of queue ``qid`` — a latch never written, another queue's number, a bad command, an index past
    the ring. Decoded inline: ``abi.decode_doorbell`` raises on an unknown command."""
    tail = (word >> 32) & 0xFFFF
    if word & 0xFFF != qid or (word >> 12) & 0xF != _SQ or tail >= abi.QUEUE_DEPTH:
        return -1
    return tail


def _crash() -> None:
    """The injected crash: exit at once, no cleanup, no socket unlinked (a dying device)."""
    log.critical("injected crash: exiting with status %d", CRASH_STATUS)
    logging.shutdown()
    os._exit(CRASH_STATUS)


def _memfd(name: str, size: int) -> int:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    os.ftruncate(fd, size)
    return fd
