"""Hardware errors, isolation policy, injected faults and the memory-pressure simulator.

Small pieces the device's RAS (:mod:`warp.device.ras`) and the zip device compose:

* :class:`ErrorLog` — the isolation policy of the HiSilicon QM (reference §1.5, ``qm_hw_err_isolate``):
  every hardware error is time-stamped; errors older than an hour are dropped; when the errors
  already in the window number at least ``isolate_strategy`` (non-zero), the new one isolates the
  device — isolation on *more than* ``isolate_strategy`` errors in an hour, as the sysfs ABI says.
  Sans-I/O with an injected clock, so the one-hour window is testable without waiting an hour.
* :class:`Injection` — one ``inject`` request of the control socket, parsed and validated before
  anything changes (an invalid one is refused with EINVAL and injects nothing).
* :class:`Injected` — the faults ``warpzip device inject`` asked for: a hang deadline, a budget of
  jobs that fail with a hardware error, a budget of controller resets that fail, a slow-down factor.
* :class:`Reclaimer` — a thread that periodically takes a fraction of every bound mapping's pages
  away (``--reclaim-interval-ms`` / ``--reclaim-fraction``), the host page-table dynamics behind
  the large-working-set collapse of reference §3.11.
"""

from __future__ import annotations

import errno
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, final

import numpy as np

from warp import abi, cdev
from warp.iommu.mmu import Iommu

log = logging.getLogger("warp.device")

#: Exit status of an injected crash (EX_SOFTWARE).
CRASH_STATUS: Final = 70
#: Largest slow-down ``inject slow`` accepts.
MAX_SLOW_FACTOR: Final = 1000.0
#: The faults ``inject`` knows.
FAULTS: Final = ("hang", "hw-error", "reset-fail", "cqe-error", "eq-overflow", "iopf-storm", "slow", "crash")
#: Largest queue number an AEQE carries (``qp_id[15:0]``).
MAX_QP_ID: Final = 0xFFFF


@final
class ErrorLog:
    """Time-stamped hardware errors and the ``isolate_strategy`` threshold they are held against."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 window: float = abi.HW_ERROR_WINDOW_S) -> None:
        self._clock = clock
        self.window = window
        self.threshold = 0
        self._stamps: deque[float] = deque()

    def record(self) -> bool:
        """Log one hardware error; True if it isolates the device.

        As the kernel: drop entries older than the window, count the rest, add the new one, and
        isolate when the count (before adding) reached a non-zero threshold.
        """
        now = self._clock()
        self._expire(now)
        earlier = len(self._stamps)
        self._stamps.append(now)
        return bool(self.threshold) and earlier >= self.threshold

    def in_window(self) -> int:
        self._expire(self._clock())
        return len(self._stamps)

    def set_threshold(self, threshold: int) -> None:
        """A valid write of ``isolate_strategy``: the new threshold, and a fresh error list."""
        if not 0 <= threshold <= abi.ISOLATE_STRATEGY_MAX:
            raise ValueError(f"isolate_strategy must be within 0..{abi.ISOLATE_STRATEGY_MAX}")
        self.threshold = threshold
        self._stamps.clear()

    def _expire(self, now: float) -> None:
        while self._stamps and now - self._stamps[0] > self.window:
            self._stamps.popleft()


@final
@dataclass(frozen=True)
class Injection:
    """One validated ``inject`` request: the fault and its one argument."""

    fault: str  # one of FAULTS
    seconds: float | None = None  # hang: for this long; None = until reset
    count: int = 1  # hw-error: this many jobs fail; reset-fail: this many controller resets fail
    qp: int = 0  # cqe-error: the queue pair the AEQE names
    factor: float = 1.0  # slow: engines take factor x each job's time

    @classmethod
    def parse(cls, message: cdev.Message) -> Injection:
        """Raises ``OSError(EINVAL)`` for an unknown fault or an argument out of range (and
        ``ValueError``/``TypeError`` for one that is no number, which the control server answers
        EINVAL too)."""
        fault = message.get("fault")
        if fault == "hang":
            seconds = message.get("seconds")
            if seconds is None:
                return cls(fault)
            if not (math.isfinite(float(seconds)) and float(seconds) >= 0):
                raise OSError(errno.EINVAL, "--seconds must be a finite number >= 0")
            return cls(fault, seconds=float(seconds))
        if fault in ("hw-error", "reset-fail"):
            count = int(message.get("count", 1))
            if count < 1:
                raise OSError(errno.EINVAL, "--count must be at least 1")
            return cls(fault, count=count)
        if fault == "cqe-error":
            qp = int(message.get("qp", -1))
            if not 0 <= qp <= MAX_QP_ID:
                raise OSError(errno.EINVAL, f"--qp must be within 0..{MAX_QP_ID}")
            return cls(fault, qp=qp)
        if fault == "slow":
            factor = float(message.get("factor", 0))
            if not 1.0 <= factor <= MAX_SLOW_FACTOR:
                raise OSError(errno.EINVAL, f"--factor must be within 1..{MAX_SLOW_FACTOR:g}")
            return cls(fault, factor=factor)
        if fault in FAULTS:
            return cls(str(fault))
        raise OSError(errno.EINVAL, f"unknown fault {fault!r}")


@final
class Injected:
    """Faults injected through the control socket. Engines read the attributes without a lock;
    the budget of hardware errors is taken under one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.hang_until = 0.0  # time.monotonic() deadline; inf = until reset; 0 = no hang
        self.hw_errors = 0  # the next N jobs complete with Status.HW_ERROR
        self.reset_failures = 0  # the next N controller resets fail
        self.slow_factor = 1.0  # engines take factor x the job's time

    @property
    def per_job(self) -> bool:
        """Whether engines must look at each job (hardware errors or slow-down pending)."""
        return self.hw_errors > 0 or self.slow_factor != 1.0

    def hung(self) -> bool:
        until = self.hang_until
        return bool(until) and time.monotonic() < until

    def end_hang(self) -> bool:
        """Clear a hang whose time is up; True if this call ended it."""
        with self._lock:
            until = self.hang_until
            if until and time.monotonic() >= until:
                self.hang_until = 0.0
                return True
            return False

    def hang(self, seconds: float | None) -> None:
        with self._lock:
            self.hang_until = math.inf if seconds is None else time.monotonic() + max(seconds, 0.0)

    def add_hw_errors(self, count: int) -> None:
        with self._lock:
            self.hw_errors += count

    def take_hw_error(self) -> bool:
        with self._lock:
            if self.hw_errors <= 0:
                return False
            self.hw_errors -= 1
            return True

    def add_reset_failures(self, count: int) -> None:
        with self._lock:
            self.reset_failures += count

    def take_reset_failure(self) -> bool:
        with self._lock:
            if self.reset_failures <= 0:
                return False
            self.reset_failures -= 1
            return True

    def recover(self) -> None:
        """A reset re-initialised the hardware: a hang and a slow-down end. The budgets of
        hardware errors and failing resets do not: ``--count N`` means N, each with its reset."""
        with self._lock:
            self.hang_until = 0.0
            self.slow_factor = 1.0


@final
class Reclaimer:
    """Memory pressure: every ``interval`` seconds, reclaim ``fraction`` of each bound mapping."""

    def __init__(self, iommu: Iommu, interval: float, fraction: float,
                 on_pass: Callable[[int], None]) -> None:
        if interval <= 0 or not 0 < fraction <= 1:
            raise ValueError("reclaim needs a positive interval and a fraction in (0, 1]")
        self._iommu = iommu
        self._interval = interval
        self._fraction = fraction
        self._on_pass = on_pass
        self._rng = np.random.default_rng()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reclaim", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._on_pass(self._iommu.reclaim(self._fraction, self._rng))
            except Exception:  # a mapping vanishing mid-pass must not kill the simulator
                log.exception("reclaim pass failed")
