"""The failover policy: when a runtime leaves its device for the cpu, and when it looks for the
device again. Sans I/O: the runtime (:mod:`warp.runtime`) and the prober (:mod:`warp.probe`) carry
the decisions out — re-runs, PUT_Qs, probes in threads — and the clock is injected, so the rules are
tested without a device or a loop (``tests/unit/test_failover.py``), as the device's ``ErrorLog`` is.

Probing: opening queues is a handful of request/answer round trips, each bounded by
``CONTROL_TIMEOUT`` (5 s). Probes that time out (a device that takes the connection and answers
nothing: ``kill -STOP``, a debugger, a hung kernel thread) back off, doubling from
``PROBE_INTERVAL`` to ``PROBE_BACKOFF_MAX``, so a device that stays hung is not re-stalled every
second; a device that is absent or restarting (refused at once) is looked for every
``PROBE_INTERVAL``, so a restarted one is used again within about a second.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from typing import Final, final

from warp import abi

#: Statuses that say "not your input's fault": the job is re-run on the cpu driver. A job over one
#: BD whose stream context the device had no room for (``NO_CTX_MEMORY``) is one of them: the cpu
#: runs it whole, with no stream context.
RETRY_ON_CPU: Final = frozenset({abi.Status.HW_ERROR, abi.Status.NO_CTX_MEMORY})
#: How soon after a loss (or a good probe) the device is looked for again.
PROBE_INTERVAL: Final = 1.0
#: The longest wait between two probes of a device that keeps not answering.
PROBE_BACKOFF_MAX: Final = 30.0


class Expiry(enum.Enum):
    """What a job's timeout does, by where the job is running."""

    RESET = enum.auto()  # on the device in use: reset its queues, which ends the job; it re-runs on the cpu
    FAIL = enum.auto()  # on the cpu: there is nowhere left to run it, it fails with JobTimeout
    WAIT = enum.auto()  # on queues being reset already: that reset ends this job too


class Probe(enum.Enum):
    """How a probe for the device went."""

    FOUND = enum.auto()  # it answered: queues are open on it
    ABSENT = enum.auto()  # refused at once: absent, or restarting and back as soon as it is up
    HUNG = enum.auto()  # it took the connection and did not answer: stopped or hung


@final
class Failover:
    """The rules, and the probe schedule they keep. Not thread-safe: the prober calls the probe
    methods under its lock; the runtime's calls touch no state."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._wait = PROBE_INTERVAL
        self._next = 0.0

    @staticmethod
    def rerun(status: int, lost: bool) -> bool:
        """After a job's first attempt (``status`` from its engine, ``lost`` if the device lost it
        or stopped its queue): does it run again, on the cpu? Only when the device let it down —
        a job fails for its own input's fault on any driver, so that is the caller's answer."""
        return lost or status in RETRY_ON_CPU

    @staticmethod
    def expiry(*, on_cpu: bool, on_device_in_use: bool) -> Expiry:
        """A job outlived the runtime's timeout: on the device it costs the device its queues, not
        the caller its request; on the cpu it is the caller's answer."""
        if on_device_in_use:
            return Expiry.RESET
        return Expiry.FAIL if on_cpu else Expiry.WAIT

    def probe_due(self) -> bool:
        """Is it time to look for the device again?"""
        return self._clock() >= self._next

    def probed(self, outcome: Probe) -> None:
        """A probe ended: schedule the next (backing off only while the device does not answer)."""
        self._wait = min(self._wait * 2, PROBE_BACKOFF_MAX) if outcome is Probe.HUNG else PROBE_INTERVAL
        self._next = self._clock() + self._wait

    def postpone(self) -> None:
        """The device just failed a job: give it ``PROBE_INTERVAL`` before looking again."""
        self._next = self._clock() + PROBE_INTERVAL

    @property
    def interval(self) -> float:
        """The wait between the last probe and the next: how far backing off has gone."""
        return self._wait
