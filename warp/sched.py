"""Which queue gets the next job. Pluggable: anything with ``pick(candidates, key)`` will do.

Two families: per-job policies (:class:`LeastLoaded`, :class:`RoundRobin`) look at the queues for
every job and ignore the key; :class:`SessionRoundRobin` is UADK's ``wd_sched`` RR, which gives a
session one ctx when the session is created (``sched_init``) and sends every request of that
session to it — the key a session's jobs carry is that ctx's index.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Protocol, TypeVar, final

T = TypeVar("T", bound="Loaded")


class Loaded(Protocol):
    @property
    def load(self) -> int:
        """Jobs in the queue's SQ plus those waiting for a slot."""
        ...


class Scheduler(Protocol):
    #: Whether sessions get a ctx at creation (:meth:`assign`) that their jobs' key names.
    per_session: bool

    def pick(self, candidates: Sequence[T], key: int | None = None) -> T: ...

    def assign(self, region: Hashable, size: int) -> int | None:
        """The ctx index a new session of ``region`` (its op type) gets, or None per job."""
        ...


@final
class RoundRobin:
    """UADK's default policy, but per job rather than per session: spreads bursts over queues."""

    per_session = False

    def __init__(self) -> None:
        self._next = 0

    def pick(self, candidates: Sequence[T], key: int | None = None) -> T:
        choice = candidates[self._next % len(candidates)]
        self._next += 1
        return choice

    def assign(self, region: Hashable, size: int) -> int | None:
        return None


@final
class LeastLoaded:
    """The queue with the fewest jobs in flight, the first on a tie. Under light load every job
    goes to the first queue (big batches, one busy engine, the other core left to HTTP); once it
    has a backlog the next queue — and the engine that serves it — takes work. The default."""

    per_session = False

    def pick(self, candidates: Sequence[T], key: int | None = None) -> T:
        best = candidates[0]
        least = best.load
        for queue in candidates[1:]:
            if queue.load < least:
                best, least = queue, queue.load
        return best

    def assign(self, region: Hashable, size: int) -> int | None:
        return None


@final
class SessionRoundRobin:
    """UADK's RR (``wd_sched.c``): a region per op type (one NUMA node, one mode: see below) with
    a ``last`` index; a new session takes the next ctx of its region, wrapping, and keeps it.

    UADK also splits regions by NUMA node and by mode (sync ctxs, async ctxs); this library opens
    its queues on one device (one node) and a queue serves either mode, so the region is the op
    type alone. A job without a key (a batch helper, a job not from a session) goes to the first ctx.
    """

    per_session = True

    def __init__(self) -> None:
        self._last: dict[Hashable, int] = {}

    def assign(self, region: Hashable, size: int) -> int | None:
        index = self._last.get(region, -1) + 1
        self._last[region] = index % size
        return index % size

    def pick(self, candidates: Sequence[T], key: int | None = None) -> T:
        return candidates[key % len(candidates) if key is not None else 0]


#: The policies by the name ``Runtime(sched=...)`` and ``warpzip serve --sched`` take.
POLICIES: dict[str, type[LeastLoaded] | type[SessionRoundRobin] | type[RoundRobin]] = {
    "least-loaded": LeastLoaded, "session": SessionRoundRobin, "round-robin": RoundRobin,
}
