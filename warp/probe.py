"""Looking for a device that came back, without ever making an event loop wait for it.

Opening queues is a handful of request/answer round trips on the char-device socket, each bounded
by ``CONTROL_TIMEOUT`` (5 s). A device that is stopped (``kill -STOP``, a debugger, a hung kernel
thread) accepts the connection and answers nothing, so a probe made on the event loop's thread
froze the whole worker for seconds, every second. Here a probe made from a loop runs in a thread
of its own and hands its driver over when the runtime next asks; a caller without a loop (the
sync API) waits for its probe as it waits for its jobs. Probes that time out back off, doubling
from ``PROBE_INTERVAL`` to ``PROBE_BACKOFF_MAX``, so a device that stays hung is not re-stalled
every second; a device that is absent or restarting (refused at once) is looked for every
``PROBE_INTERVAL``, so a restarted one is used again within about a second.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Final, final

from warp.drv.zip import ZipDriver
from warp.errors import NoDevice

#: How soon after a loss (or a good probe) the device is looked for again.
PROBE_INTERVAL: Final = 1.0
#: The longest wait between two probes of a device that keeps not answering.
PROBE_BACKOFF_MAX: Final = 30.0


@final
class Prober:
    """Probes with ``open_driver`` (which raises :class:`NoDevice` or ``OSError`` when there is no
    usable device) at most once per interval, in the background when asked from an event loop."""

    def __init__(self, open_driver: Callable[[], ZipDriver], clock: Callable[[], float] = time.monotonic) -> None:
        self._open = open_driver
        self._clock = clock
        self._lock = threading.Lock()
        self._wait = PROBE_INTERVAL
        self._next = 0.0
        self._running = False
        self._found: ZipDriver | None = None
        self._closed = False

    def take(self, background: bool) -> ZipDriver | None:
        """A driver on a device that answered, if a probe found one; otherwise start a probe if
        one is due — in a thread when ``background``, else right here — and return what it found."""
        with self._lock:
            found, self._found = self._found, None
            if found is not None or self._running or self._closed or self._clock() < self._next:
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
        """The device just failed a job: give it ``PROBE_INTERVAL`` before looking again."""
        with self._lock:
            self._next = self._clock() + PROBE_INTERVAL

    @property
    def interval(self) -> float:
        """The wait before the next probe after this one fails (for ``statistics`` and tests)."""
        return self._wait

    def _run(self) -> None:
        hung = False
        try:
            fresh: ZipDriver | None = self._open()
        except TimeoutError:  # it took the connection and did not answer: stopped or hung
            fresh, hung = None, True
        except (NoDevice, OSError):  # absent, or restarting: it will answer as soon as it is back
            fresh = None
        with self._lock:
            self._running = False
            if fresh is None:
                self._wait = min(self._wait * 2, PROBE_BACKOFF_MAX) if hung else PROBE_INTERVAL
                self._next = self._clock() + self._wait
                return
            self._wait = PROBE_INTERVAL
            self._next = self._clock() + PROBE_INTERVAL
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
