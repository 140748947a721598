"""RAS of the zstd device: hardware errors, isolation, controller reset, and the injected faults
that exercise them.

The error-handling half of the HiSilicon QM driver (``drivers/crypto/hisilicon/qm.c``:
``qm_hw_err_isolate``, ``qm_disable_qp``, ``qm_controller_reset``), plus applying the faults the
control socket injects (what debugfs error injection is on real hardware; parsed in
:mod:`warp.device.faults`). Hardware errors are counted against ``isolate_strategy``;
isolation sets every queue's TX/RX stop flags, and a controller reset (control socket, or a
stop whose drain failed) clears them. Every change is mirrored into the device's DFX row at once,
so a collector sees it without a round trip.
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
from warp.device.control import Reply
from warp.device.faults import CRASH_STATUS, ErrorLog, Injected, Injection
from warp.device.qp import Qp, QpState
from warp.dfx import Dev, Queue
from warp.iommu.mmu import Iommu

log = logging.getLogger("warp.device")


@final
class Ras:
    """Error log, isolation and reset of one device, and the faults injected into it.

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
        #: True while a controller reset runs: the QM is stopped (``QM_STOP``), and creating or
        #: starting a queue fails with EPERM, as ``qm_qp_avail_state`` refuses it.
        self.resetting = False
        dev[Dev.SLOW_FACTOR_MILLI] = 1000

    def isolated(self) -> bool:
        return bool(self._dev[Dev.ISOLATED])

    def set_threshold(self, threshold: int) -> None:
        """A write of ``isolate_strategy``: refused while isolated (EPERM), validated (EINVAL),
        and a valid one starts a fresh error list, as the QM driver does."""
        with self._lock:
            if self.isolated():
                raise OSError(errno.EPERM, "the device is isolated; reset it first")
            try:
                self.errors.set_threshold(threshold)
            except ValueError as exc:
                raise OSError(errno.EINVAL, str(exc)) from None
            self._dev[Dev.ISOLATE_STRATEGY] = threshold
            self._dev[Dev.HW_ERRORS_WINDOW] = 0

    def hw_error(self, qp: Qp) -> None:
        """A job hit a hardware error: count it, time-stamp it, and isolate past the threshold."""
        now_ns = time.time_ns()
        with self._lock:
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
        for qp in self._queues():
            with qp.irq_lock:
                if qp.closed:
                    continue
                qp.view.stop()
                qp.halt = True
                os.eventfd_write(qp.irq_fd, 1)  # wake a sleeping user: it finds the RX flag
                qp.counters[Queue.INTERRUPTS] += 1
        log.error("device isolated: more than %d hardware errors within %d s", self.errors.threshold,
                  self.errors.window)
        self.notify()

    def drain_failed(self, qp: Qp, left: int) -> None:
        """``qm_drain_qp`` timed out stopping ``qp`` (a hung engine): a hardware error, not a
        flush. The queue stopped with ``left`` SQEs no engine fetched, which get no CQE; the
        controller reset runs (``qm_controller_reset``) and ends the hang for the other queues."""
        log.error("queue %d: fail to empty queue (%d SQE(s) unfetched), resetting the controller", qp.qid, left)
        self.reset()

    def reset(self) -> int:
        """Controller reset: clear isolation, injected faults, the error list and every queue's
        stop flags; queues keep their ring state and resume (a warm reset). Returns the count.
        The QM counts as stopped until the new state is published (``notify``)."""
        self.resetting = True
        try:
            return self._reset()
        finally:
            self.resetting = False

    def _reset(self) -> int:
        with self._lock:
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
        qps = self._queues()
        for qp in qps:
            with qp.irq_lock:
                if not qp.closed:
                    qp.view.status[0] = 0
                    qp.view.status[1] = 0
        for qp in qps:  # whatever waited in a stopped SQ is fetched again
            with qp.lock:
                if qp.state is QpState.STARTED:
                    qp.device_kicks += 1
                    os.eventfd_write(qp.db_fd, 1)
        log.warning("controller reset #%d: isolation, injected faults and stop flags cleared", resets)
        self.notify()
        return resets

    def inject(self, injection: Injection) -> Reply:
        """Apply one validated injection; the reply, and what to do once it is sent (crash)."""
        fault = injection.fault
        faults = self.faults
        reply: cdev.Message
        after: Callable[[], None] | None = None
        if fault == "hang":
            faults.hang(injection.seconds)
            self._dev[Dev.HUNG] = 1
            reply = {"hang_seconds": injection.seconds}
        elif fault == "hw-error":
            faults.add_hw_errors(injection.count)
            self._dev[Dev.HW_ERRORS_PENDING] = faults.hw_errors
            reply = {"hw_errors_pending": faults.hw_errors}
        elif fault == "iopf-storm":
            pages = self._iommu.reclaim(1.0)
            self.reclaimed(pages)
            reply = {"pages": pages}
        elif fault == "slow":
            faults.slow_factor = injection.factor
            self._dev[Dev.SLOW_FACTOR_MILLI] = round(injection.factor * 1000)
            reply = {"factor": injection.factor}
        else:  # crash
            reply = {"exit": CRASH_STATUS}
            after = _crash
        self._dev[Dev.INJECTIONS] += 1
        log.warning("injected fault %s: %s", fault, reply)
        return reply, after

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
                "hw_errors_pending": faults.hw_errors, "slow_factor": faults.slow_factor,
                "isolate_strategy": self.errors.threshold, "hw_errors_in_window": self.errors.in_window()}


def _crash() -> None:
    """The injected crash: exit at once, no cleanup, no socket unlinked (a dying device)."""
    log.critical("injected crash: exiting with status %d", CRASH_STATUS)
    logging.shutdown()
    os._exit(CRASH_STATUS)
