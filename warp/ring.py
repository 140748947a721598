"""Sans-I/O SQ/CQ ring protocol, used by both the device (consumer of SQEs, producer of CQEs) and
the library (producer of SQEs, consumer of CQEs).

The classes only track indices and read/write words in numpy views of the DUS region handed to
them; they never block, sleep or touch a file descriptor, so the same code is exercised by unit
tests with plain arrays and by two processes sharing a memfd. Shared words are written with single
aligned numpy element stores, payload first and the validating word (the CQE phase) last.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, final

import numpy as np
import numpy.typing as npt

from warp import abi


class RingFull(Exception):
    """The SQ holds ``depth - 1`` entries: one slot stays empty so full and empty differ."""


class RingOverflow(Exception):
    """The device had a completion to post and no free CQ slot (QM_CQ_OVERFLOW)."""


@final
@dataclass(frozen=True)
class DusView:
    """Typed views over one queue's DUS region (SQ | CQ | pad | status page)."""

    sq: npt.NDArray[np.uint32]  # (depth, 32) words
    cq: npt.NDArray[np.uint16]  # (depth, 8) halfwords
    tx_stop: npt.NDArray[np.uint32]  # one element
    rx_stop: npt.NDArray[np.uint32]

    @classmethod
    def over(cls, buf: memoryview | bytearray, depth: int = abi.QUEUE_DEPTH) -> DusView:
        raw = np.frombuffer(buf, dtype=np.uint8)
        sq = raw[abi.SQ_OFFSET:abi.SQ_OFFSET + depth * abi.SQE_SIZE].view(np.uint32).reshape(depth, abi.SQ_WORDS)
        cq_off = depth * abi.SQE_SIZE
        cq = raw[cq_off:cq_off + depth * abi.CQE_SIZE].view(np.uint16).reshape(depth, 8)
        end = len(raw)
        return cls(sq=sq, cq=cq, tx_stop=raw[end - 4:end].view(np.uint32),
                   rx_stop=raw[end - 8:end - 4].view(np.uint32))


@final
class SqProducer:
    """Library side of the SQ: hands out slots at the tail and takes them back on completion."""

    def __init__(self, depth: int = abi.QUEUE_DEPTH) -> None:
        self.depth: Final = depth
        self.tail = 0
        self.used = 0

    @property
    def free(self) -> int:
        return self.depth - 1 - self.used

    def push(self) -> int:
        """Reserve the slot at the tail; the caller fills it, then rings the SQ doorbell with ``tail``."""
        if self.used >= self.depth - 1:
            raise RingFull
        slot = self.tail
        self.tail = (self.tail + 1) % self.depth
        self.used += 1
        return slot

    def retire(self, count: int = 1) -> None:
        """Completions consumed from the CQ give their SQ slots back (UADK ``used--``)."""
        if count > self.used:
            raise ValueError(f"retiring {count} of {self.used} used slots")
        self.used -= count


@final
class SqConsumer:
    """Device side of the SQ: fetches SQEs from its head up to the tail of the last SQ doorbell."""

    def __init__(self, depth: int = abi.QUEUE_DEPTH) -> None:
        self.depth: Final = depth
        self.head = 0

    def pending(self, tail: int) -> int:
        return (tail - self.head) % self.depth

    def pop(self) -> int:
        slot = self.head
        self.head = (self.head + 1) % self.depth
        return slot


@final
class CqProducer:
    """Device side of the CQ: posts CQEs with the current phase, which flips on every wrap."""

    def __init__(self, depth: int = abi.QUEUE_DEPTH) -> None:
        self.depth: Final = depth
        self.tail = 0
        self.phase = 1
        self.head = 0  # last head returned by a CQ doorbell

    @property
    def free(self) -> int:
        return self.depth - 1 - (self.tail - self.head) % self.depth

    def doorbell(self, head: int) -> None:
        """A CQ doorbell returns every slot before ``head`` to the device."""
        self.head = head % self.depth

    def post(self, cq: npt.NDArray[np.uint16], sq_head: int, sq_num: int) -> None:
        if self.free == 0:
            raise RingOverflow
        row = cq[self.tail]
        row[abi.CQE_HALF_SQ_HEAD] = sq_head
        row[abi.CQE_HALF_SQ_NUM] = sq_num
        row[abi.CQE_HALF_W7] = self.phase  # validating store last
        self.tail += 1
        if self.tail == self.depth:
            self.tail = 0
            self.phase ^= 1


@final
class CqConsumer:
    """Library side of the CQ: a CQE is valid while its phase bit equals ``phase`` (initially 1)."""

    def __init__(self, depth: int = abi.QUEUE_DEPTH) -> None:
        self.depth: Final = depth
        self.head = 0
        self.phase = 1

    def poll(self, cq: npt.NDArray[np.uint16]) -> int | None:
        """Consume one CQE and return the SQ slot it completes, or ``None`` if none is ready."""
        row = cq[self.head]
        if int(row[abi.CQE_HALF_W7]) & 1 != self.phase:
            return None
        sq_head = int(row[abi.CQE_HALF_SQ_HEAD])
        self.head += 1
        if self.head == self.depth:
            self.head = 0
            self.phase ^= 1
        return sq_head
