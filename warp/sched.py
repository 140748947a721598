"""Which queue gets the next job. Pluggable: anything with ``pick(candidates)`` will do."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar, final

T = TypeVar("T", bound="Loaded")


class Loaded(Protocol):
    @property
    def load(self) -> int:
        """Jobs in the queue's SQ plus those waiting for a slot."""
        ...


class Scheduler(Protocol):
    def pick(self, candidates: Sequence[T]) -> T: ...


@final
class RoundRobin:
    """UADK's default policy, but per job rather than per session: spreads bursts over queues."""

    def __init__(self) -> None:
        self._next = 0

    def pick(self, candidates: Sequence[T]) -> T:
        choice = candidates[self._next % len(candidates)]
        self._next += 1
        return choice


@final
class LeastLoaded:
    """The queue with the fewest jobs in flight, the first on a tie. Under light load every job
    goes to the first queue (big batches, one busy engine, the other core left to HTTP); once it
    has a backlog the next queue — and the engine that serves it — takes work. The default."""

    def pick(self, candidates: Sequence[T]) -> T:
        best = candidates[0]
        least = best.load
        for queue in candidates[1:]:
            if queue.load < least:
                best, least = queue, queue.load
        return best
