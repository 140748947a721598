"""RAS of the zstd device: hardware errors, the AEQ's events, resets, isolation, and the
injected faults that exercise them.

The error-handling half of the HiSilicon QM driver (``drivers/crypto/hisilicon/qm.c`` with the
isolation patch, reference §1.5, §2.6, §4.3), plus applying the faults the control socket injects
(what debugfs error injection is on real hardware; parsed in :mod:`warp.device.faults`):

* A hardware error (an injected one failing a job, or a drain a hung engine failed) is the
  abnormal interrupt: it schedules the controller reset (``rst_work``), no operator needed.
* The controller reset (``qm_controller_reset``; also ``warpzip device reset``): reset-prepare
  counts one error against ``isolate_strategy`` (``qm_hw_err_isolate``: not while isolated), then
  ``hisi_qm_stop(QM_SOFT_RESET)`` sets every queue's TX flag, stops the started ones, sets every
  RX flag. The flags **stay set**: only a new queue (``get_queue``, a fresh DUS) starts clean, so
  a user re-creates its queues, as UADK users do after ``-WD_HW_EACCESS``. A reset that fails
  isolates the device and leaves the QM stopped.
* Isolation is sticky: no reset clears it, and ``isolate_strategy`` cannot be written while it
  holds (EPERM). Only a new probe of the driver (a new device process here) starts without it.
* AEQ events (:mod:`warp.device.aeq`): CQ overflow and CQE error disable one queue pair
  (``qm_disable_qp``); an EQ overflow resets the function (``qm_reset_function``: every queue
  stopped as by a controller reset, but not counted toward isolation).

Every change is mirrored into the device's DFX row at once, so a collector sees it without a
round trip.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from typing import final

import numpy as np
import numpy.typing as npt

from warp import cdev
from warp.device.aeq import Aeq, AeqType
from warp.device.control import Reply
from warp.device.faults import CRASH_STATUS, ErrorLog, Injected, Injection
from warp.device.qp import Qp
from warp.dfx import Dev, Queue
from warp.iommu.mmu import Iommu

log = logging.getLogger("warp.device")

#: Indexes of the DUS status words (``DusView.status``): RX stop at END-8, TX stop at END-4.
_RX, _TX = 0, 1
#: The DFX column that counts each AEQ event type.
_AEQ_COLUMN = {AeqType.CQ_OVERFLOW: Dev.AEQ_CQ_OVERFLOW, AeqType.EQ_OVERFLOW: Dev.AEQ_EQ_OVERFLOW,
               AeqType.CQE_ERROR: Dev.AEQ_CQE_ERROR}


@final
class Ras:
    """Error log, isolation, resets and AEQ of one device, and the faults injected into it.

    ``queues`` lists the queue pairs taken now; ``notify`` is the core's sysfs refresh (set by
    ``ZipDevice.set_notifier``), called when ``isolate`` changes.
    """

    def __init__(self, dev: npt.NDArray[np.uint64], iommu: Iommu, queues: Callable[[], list[Qp]],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.faults = Injected()
        self.errors = ErrorLog(clock)
        self.notify: Callable[[], None] = lambda: None
        self._dev = dev
        self._iommu = iommu
        self._queues = queues
        self._lock = threading.Lock()
        self._reset_lock = threading.Lock()  # one reset at a time (QM_RESETTING)
        self._reset_scheduled = False  # QM_RST_SCHED: errors during a pending reset add none
        self._resetting = False
        self._failed = False  # the last controller reset failed: the QM was not restarted
        self.aeq = Aeq(self._event, self._aeq_lost)
        self._injectors: dict[str, Callable[[Injection], cdev.Message]] = {
            "hang": self._inject_hang, "hw-error": self._inject_hw_error, "reset-fail": self._inject_reset_fail,
            "cqe-error": self._inject_cqe_error, "eq-overflow": self._inject_eq_overflow,
            "iopf-storm": self._inject_iopf_storm, "slow": self._inject_slow}
        dev[Dev.SLOW_FACTOR_MILLI] = 1000

    @property
    def qm_stopped(self) -> bool:
        """Whether the QM is stopped (``QM_STOP``): creating or starting a queue fails with
        EPERM, as ``qm_qp_avail_state`` refuses it — while a reset runs, and after one failed."""
        return self._resetting or self._failed

    def isolated(self) -> bool:
        return bool(self._dev[Dev.ISOLATED])

    def set_threshold(self, threshold: int) -> None:
        """A write of ``isolate_strategy``: refused while isolated (EPERM), validated (EINVAL),
        and a valid one starts a fresh error list, as the QM driver does."""
        with self._lock:
            if self.isolated():
                raise OSError(errno.EPERM, "the device is isolated")
            try:
                self.errors.set_threshold(threshold)
            except ValueError as exc:
                raise OSError(errno.EINVAL, str(exc)) from None
            self._dev[Dev.ISOLATE_STRATEGY] = threshold
            self._dev[Dev.HW_ERRORS_WINDOW] = 0

    # ---- hardware errors -------------------------------------------------------------------
    def hw_error(self, qp: Qp) -> None:
        """A job hit a hardware error (the abnormal interrupt): counted, and the controller reset
        scheduled on a thread of its own (``rst_work``) — the caller is an engine inside a batch."""
        self._count_hw_error(f"hardware error on queue {qp.qid}")
        with self._lock:
            if self._reset_scheduled:
                return
            self._reset_scheduled = True
        threading.Thread(target=self._rst_work, name="qm-rst", daemon=True).start()

    def _rst_work(self) -> None:
        try:
            self.reset()
        except OSError:
            pass  # a failed reset is logged and isolates; nobody waits for this one

    def drain_failed(self, qp: Qp, left: int) -> None:
        """``qm_drain_qp`` timed out stopping ``qp`` (a hung engine): a hardware error, not a
        flush. The queue stopped with ``left`` SQEs no engine fetched, which get no CQE; the
        controller reset runs before the stop returns and ends the hang for the other queues."""
        self._count_hw_error(f"queue {qp.qid}: fail to empty queue ({left} SQE(s) unfetched)")
        try:
            self.reset()
        except OSError:
            pass  # isolated; the stop itself is done

    def _count_hw_error(self, what: str) -> None:
        with self._lock:
            self._dev[Dev.HW_ERRORS] += 1
            self._dev[Dev.LAST_HW_ERROR_NS] = time.time_ns()
            self._dev[Dev.HW_ERRORS_PENDING] = self.faults.hw_errors
        log.error("%s: resetting the controller", what)

    # ---- resets ----------------------------------------------------------------------------
    def reset(self) -> int:
        """Controller reset (``qm_controller_reset``): prepare (count toward isolation, stop every
        queue), reset, restart the QM. Returns the count of resets; raises ``OSError(EIO)`` if it
        failed, which isolates the device and leaves the QM stopped. The outcome is published
        (counters, sysfs, each user woken) once the QM runs again, so whoever it wakes can open
        a new queue at once."""
        with self._reset_lock:
            self._resetting = True
            self._dev[Dev.QM_STOPPED] = 1
            isolate, qps, failed = False, [], False
            try:
                isolate = self._hw_err_isolate()
                qps = self._stop_all()
                failed = self.faults.take_reset_failure()
                if not failed:
                    self._recover()
            finally:
                resets = self._reset_done(isolate, failed)
        self._wake(qps)
        self.notify()
        if failed:
            log.error("controller reset #%d failed: the device is isolated", resets)
            raise OSError(errno.EIO, "the controller reset failed: the device is isolated")
        log.warning("controller reset #%d done; every queue keeps its stop flags%s", resets,
                    " (the device is isolated)" if self.isolated() else "")
        return resets

    def _reset_done(self, isolate: bool, failed: bool) -> int:
        """Publish a controller reset's outcome in one step; the count of resets."""
        with self._lock:
            dev = self._dev
            if failed:
                dev[Dev.RESET_FAILURES] += 1
            if (failed or isolate) and not self.isolated():
                dev[Dev.ISOLATED] = 1
                dev[Dev.ISOLATIONS] += 1
            self._failed = failed
            self._reset_scheduled = False
            self._resetting = False
            dev[Dev.RESET_FAILS_PENDING] = self.faults.reset_failures
            dev[Dev.QM_STOPPED] = int(failed)
            dev[Dev.RESETS] += 1
            return int(dev[Dev.RESETS])

    def _hw_err_isolate(self) -> bool:
        """Reset-prepare's ``qm_hw_err_isolate``: nothing while isolated; else log the error
        (dropping those over an hour old) and say whether it isolates."""
        with self._lock:
            if self.isolated():
                return False
            isolate = self.errors.record()
            self._dev[Dev.HW_ERRORS_WINDOW] = self.errors.in_window()
        if isolate:
            log.error("isolating: more than %d hardware errors within %d s", self.errors.threshold,
                      self.errors.window)
        return isolate

    def function_reset(self) -> None:
        """``qm_reset_function`` (an EQ overflow): every queue stopped as by a controller reset
        (``hisi_qm_stop(QM_DOWN)``), the hardware re-initialised; not counted toward isolation."""
        with self._reset_lock:
            self._resetting = True
            self._dev[Dev.QM_STOPPED] = 1
            qps: list[Qp] = []
            try:
                qps = self._stop_all()
                self._recover()
            finally:
                with self._lock:
                    self._resetting = False
                    self._failed = False  # hisi_qm_start: the QM runs again, even after a failed reset
                    self._dev[Dev.QM_STOPPED] = 0
                    self._dev[Dev.FUNCTION_RESETS] += 1
        self._wake(qps)
        self.notify()

    def _recover(self) -> None:
        """The hardware is re-initialised: an injected hang or slow-down ends."""
        self.faults.recover()
        self._dev[Dev.HUNG] = 0
        self._dev[Dev.SLOW_FACTOR_MILLI] = 1000

    def _stop_all(self) -> list[Qp]:
        """``hisi_qm_stop`` for a reset: every queue's TX flag, every queue stopped (an engine
        inside a batch leaves it at the next job boundary, and the stop waits for that), every RX
        flag. The queue pairs stay taken and in their state: their owners put them."""
        qps = self._queues()
        for qp in qps:
            _set_flag(qp, _TX)
        for qp in qps:
            _quiesce(qp)
        for qp in qps:
            _set_flag(qp, _RX)
        return qps

    def disable_qp(self, qid: int) -> None:
        """``qm_disable_qp``: TX flag, stop the queue, RX flag, and wake its user, who finds the
        flags (UADK: ``-WD_HW_EACCESS``). A queue number nobody holds is logged and left."""
        qp = next((qp for qp in self._queues() if qp.qid == qid), None)
        if qp is None:
            log.error("AEQ names queue %d, which is not in use", qid)
            return
        _set_flag(qp, _TX)
        _quiesce(qp)
        _set_flag(qp, _RX)
        self._dev[Dev.QPS_DISABLED] += 1
        self._wake([qp])
        log.error("queue %d disabled", qid)

    @staticmethod
    def _wake(qps: list[Qp]) -> None:
        """Raise each queue's interrupt once, so a user asleep in poll() finds its flags."""
        for qp in qps:
            with qp.irq_lock:
                if not qp.closed:
                    os.eventfd_write(qp.irq_fd, 1)
                    qp.counters[Queue.INTERRUPTS] += 1

    # ---- the AEQ ---------------------------------------------------------------------------
    def cq_overflow(self, qp: Qp) -> None:
        """An engine found no CQ slot for a completion: the hardware reports ``QM_CQ_OVERFLOW``."""
        self.aeq.post(qp.qid, AeqType.CQ_OVERFLOW)

    def _event(self, qid: int, kind: AeqType) -> None:
        """``qm_aeq_thread``'s switch, one event."""
        self._dev[_AEQ_COLUMN[kind]] += 1
        if kind is AeqType.EQ_OVERFLOW:
            log.error("eq overflow, reset function")
            self.function_reset()
            return
        if kind is AeqType.CQ_OVERFLOW:
            log.error("cq overflow, stop qp(%d)", qid)
        self.disable_qp(qid)

    def _aeq_lost(self) -> None:
        self._dev[Dev.AEQ_LOST] += 1

    def close(self) -> None:
        self.aeq.close()

    def inject(self, injection: Injection) -> Reply:
        """Apply one validated injection; the reply, and what to do once it is sent (crash)."""
        fault = injection.fault
        after: Callable[[], None] | None = None
        if fault == "crash":
            reply: cdev.Message = {"exit": CRASH_STATUS}
            after = _crash
        else:
            reply = self._injectors[fault](injection)
        self._dev[Dev.INJECTIONS] += 1
        log.warning("injected fault %s: %s", fault, reply)
        return reply, after

    def _inject_hang(self, injection: Injection) -> cdev.Message:
        self.faults.hang(injection.seconds)
        self._dev[Dev.HUNG] = 1
        return {"hang_seconds": injection.seconds}

    def _inject_hw_error(self, injection: Injection) -> cdev.Message:
        self.faults.add_hw_errors(injection.count)
        self._dev[Dev.HW_ERRORS_PENDING] = self.faults.hw_errors
        return {"hw_errors_pending": self.faults.hw_errors}

    def _inject_reset_fail(self, injection: Injection) -> cdev.Message:
        self.faults.add_reset_failures(injection.count)
        self._dev[Dev.RESET_FAILS_PENDING] = self.faults.reset_failures
        return {"reset_failures_pending": self.faults.reset_failures}

    def _inject_cqe_error(self, injection: Injection) -> cdev.Message:
        """The hardware reports an error writing a CQE of queue ``qp`` (``QM_CQE_ERROR``): this
        model's engines never fail to write one, so the event only comes injected."""
        self.aeq.post(injection.qp, AeqType.CQE_ERROR)
        return {"aeqe": AeqType.CQE_ERROR.name.lower(), "qp": injection.qp}

    def _inject_eq_overflow(self, _injection: Injection) -> cdev.Message:
        """The EQ overflowed (``QM_EQ_OVERFLOW``): this model's completion events are eventfds,
        which cannot overflow, so the event only comes injected."""
        self.aeq.post(0, AeqType.EQ_OVERFLOW)
        return {"aeqe": AeqType.EQ_OVERFLOW.name.lower()}

    def _inject_iopf_storm(self, _injection: Injection) -> cdev.Message:
        pages = self._iommu.reclaim(1.0)
        self.reclaimed(pages)
        return {"pages": pages}

    def _inject_slow(self, injection: Injection) -> cdev.Message:
        self.faults.slow_factor = injection.factor
        self._dev[Dev.SLOW_FACTOR_MILLI] = round(injection.factor * 1000)
        return {"factor": injection.factor}

    def reclaimed(self, pages: int) -> None:
        """One reclaim pass took ``pages`` (the memory-pressure simulator, or an IOPF storm)."""
        self._dev[Dev.RECLAIMED_PAGES] += pages
        self._dev[Dev.RECLAIM_PASSES] += 1

    def end_hang(self) -> None:
        """An engine found the injected hang's time up."""
        if self.faults.end_hang():
            self._dev[Dev.HUNG] = 0
            log.warning("injected hang is over")

    def status(self) -> cdev.Message:
        """The ``status`` control request: isolation and what is injected now."""
        faults = self.faults
        until = faults.hang_until
        return {"isolated": self.isolated(), "hung": faults.hung(),
                "hang_remaining": None if until == math.inf else max(until - time.monotonic(), 0.0) if until else 0.0,
                "hw_errors_pending": faults.hw_errors, "reset_failures_pending": faults.reset_failures,
                "qm_stopped": self.qm_stopped, "slow_factor": faults.slow_factor,
                "isolate_strategy": self.errors.threshold, "hw_errors_in_window": self.errors.in_window()}


def _set_flag(qp: Qp, which: int) -> None:
    """Set one DUS stop flag (``hisi_qm_set_hw_reset``) of a queue whose memory still exists."""
    with qp.irq_lock:
        if not qp.closed:
            qp.view.status[which] = 1


def _quiesce(qp: Qp) -> None:
    """Stop the engines on ``qp``: one inside a batch sees ``halt`` and the TX flag at the next
    job boundary and leaves; holding the queue's lock once means it has."""
    qp.halt = True
    with qp.lock:
        pass


def _crash() -> None:
    """The injected crash: exit at once, no cleanup, no socket unlinked (a dying device)."""
    log.critical("injected crash: exiting with status %d", CRASH_STATUS)
    logging.shutdown()
    os._exit(CRASH_STATUS)
