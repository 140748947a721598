"""A queue's message pool: the requests in flight on one ctx, found again by their tag.

UADK keeps a pool of ``ctx_msg_num`` (at most 1024) messages per ctx (``wd_util.c``): a request
takes a slot, its tag (slot + 1) goes into the SQE (dw26 on a v3 SQE), and a completion is matched
back to its request by the tag the engine left in the SQE — not by ring position. A full pool answers
``-WD_EBUSY`` (:class:`~warp.errors.Busy`); a completion whose tag is not in flight is not ours
("failed to recv self bd", ``-WD_EINVAL``) and is dropped, counted. Sans I/O: the driver writes and
reads the tags.
"""

from __future__ import annotations

from typing import Final, final

from warp.drv.base import Job
from warp.errors import Busy

#: UADK's ``WD_POOL_MAX_ENTRIES``: also the SQ depth, so a pool never limits a full ring.
POOL_ENTRIES: Final = 1024


@final
class MsgPool:
    """Slots of requests in flight; tag = slot + 1 (0 is never a tag, so a zeroed SQE matches none)."""

    def __init__(self, entries: int = POOL_ENTRIES) -> None:
        self._jobs: list[Job | None] = [None] * entries
        self._free = list(range(entries - 1, -1, -1))  # a stack: the lowest slot first
        #: Completions whose tag named no request in flight.
        self.strays = 0

    @property
    def used(self) -> int:
        return len(self._jobs) - len(self._free)

    def take(self, job: Job) -> int:
        """A slot for ``job``; its tag. Raises :class:`Busy` when every slot is in flight."""
        if not self._free:
            raise Busy("every message of the ctx is in flight")
        slot = self._free.pop()
        self._jobs[slot] = job
        return slot + 1

    def put(self, tag: int) -> Job | None:
        """The request ``tag`` names, its slot free again; None (counted) if no request has it."""
        slot = tag - 1
        job = self._jobs[slot] if 0 <= slot < len(self._jobs) else None
        if job is None:
            self.strays += 1
            return None
        self._jobs[slot] = None
        self._free.append(slot)
        return job

    def clear(self) -> list[Job]:
        """Every request in flight, in tag order; the pool empty (the ctx was lost)."""
        jobs = [job for job in self._jobs if job is not None]
        self._jobs = [None] * len(self._jobs)
        self._free = list(range(len(self._jobs) - 1, -1, -1))
        return jobs
