"""Looking for a device that came back, without ever making an event loop wait for it.

A device that is stopped (``kill -STOP``, a debugger, a hung kernel thread) accepts the connection
and answers nothing, so a probe made on the event loop's thread froze the whole worker for seconds,
every second. Here a probe made from a loop runs in a thread of its own and hands its driver over
when the runtime next asks; a caller without a loop (the sync API) waits for its probe as it waits
for its jobs. When probes are due, and how they back off, is the failover policy's
(:mod:`warp.failover`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import final

from warp.drv.zip import ZipDriver
from warp.errors import NoDevice
from warp.failover import Failover, Probe


@final
class Prober:
    """Probes with ``open_driver`` (which raises :class:`NoDevice` or ``OSError`` when there is no
    usable device) when ``failover`` says one is due, in the background when asked from an event loop."""

    def __init__(self, open_driver: Callable[[], ZipDriver], failover: Failover | None = None) -> None:
        self._open = open_driver
        self._failover = failover or Failover()
        self._lock = threading.Lock()
        self._running = False
        self._found: ZipDriver | None = None
        self._closed = False

    def take(self, background: bool) -> ZipDriver | None:
        """A driver on a device that answered, if a probe found one; otherwise start a probe if
        one is due — in a thread when ``background``, else right here — and return what it found."""
        with self._lock:
            found, self._found = self._found, None
            if found is not None or self._running or self._closed or not self._failover.probe_due():
                return found
            self._running = True
        if background:
            threading.Thread(target=self._run, name="warp-probe", daemon=True).start()
            return None
        self._run()
        with self._lock:
            found, self._found = self._found, None
        return found

    def postpone(self) -> None:
        """The device just failed a job: give it a probe interval before looking again."""
        with self._lock:
            self._failover.postpone()

    @property
    def interval(self) -> float:
        """The wait between the last probe and the next (:attr:`Failover.interval`)."""
        with self._lock:
            return self._failover.interval

    def _run(self) -> None:
        fresh: ZipDriver | None = None
        try:
            fresh = self._open()
            outcome = Probe.FOUND
        except TimeoutError:  # it took the connection and did not answer: stopped or hung
            outcome = Probe.HUNG
        except (NoDevice, OSError):  # absent, or restarting: it will answer as soon as it is back
            outcome = Probe.ABSENT
        with self._lock:
            self._running = False
            self._failover.probed(outcome)
            if fresh is None:
                return
            if not self._closed:
                self._found = fresh
                return
        fresh.close()  # the runtime closed while we probed: nobody will take these queues

    def close(self) -> None:
        """No more probes; queues a probe opened and nobody took are put back."""
        with self._lock:
            self._closed = True
            found, self._found = self._found, None
        if found is not None:
            found.close()
