"""Sans-I/O SQ/CQ ring protocol, used by both the device (consumer of SQEs, producer of CQEs) and
the library (producer of SQEs, consumer of CQEs).

The classes only track indices and read/write words in numpy views of the DUS region handed to
them; they never block, sleep or touch a file descriptor, so the same code is exercised by unit
tests with plain arrays and by two processes sharing a memfd. Shared words are written with single
aligned element stores, payload first and the validating word (the CQE phase) last.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, final

from warp import abi


class RingFull(Exception):
    """The SQ holds ``depth - 1`` entries: one slot stays empty so full and empty differ."""


class RingOverflow(Exception):
    """The device had a completion to post and no free CQ slot (QM_CQ_OVERFLOW)."""


@final
@dataclass(frozen=True)
class DusView:
    """Flat word views over one queue's DUS region (SQ | CQ | pad | status page).

    ``sq`` holds ``depth * 32`` u32 words (SQE ``n`` word ``w`` at ``n * 32 + w``), ``cq`` holds
    ``depth * 8`` u16 halfwords. memoryview element access costs a tenth of a numpy scalar access,
    and an element store of an aligned 2-, 4- or 8-byte item is one store instruction.
    """

    sq: memoryview
    cq: memoryview
    status: memoryview  # u32 [RX stop, TX stop]: the last 8 bytes of the region

    @classmethod
    def over(cls, buf: memoryview | bytearray, depth: int = abi.QUEUE_DEPTH) -> DusView:
        raw = memoryview(buf).cast("B")
        cq_off = depth * abi.SQE_SIZE
        end = len(raw)
        return cls(sq=raw[abi.SQ_OFFSET:abi.SQ_OFFSET + cq_off].cast("I"),
                   cq=raw[cq_off:cq_off + depth * abi.CQE_SIZE].cast("H"),
                   status=raw[end - 8:end].cast("I"))

    @property
    def tx_stopped(self) -> bool:
        return bool(self.status[1])

    @property
    def rx_stopped(self) -> bool:
        return bool(self.status[0])

    def stop(self) -> None:
        """Set both stop flags, as qm_disable_qp does after a CQ overflow or CQE error."""
        self.status[1] = 1
        self.status[0] = 1

    def release(self) -> None:
        for view in (self.sq, self.cq, self.status):
            view.release()


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

    def post(self, cq: memoryview, sq_head: int, sq_num: int) -> None:
        if self.free == 0:
            raise RingOverflow
        base = self.tail * 8
        cq[base + abi.CQE_HALF_SQ_HEAD] = sq_head
        cq[base + abi.CQE_HALF_SQ_NUM] = sq_num
        cq[base + abi.CQE_HALF_W7] = self.phase  # validating store last
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

    def poll(self, cq: memoryview) -> int | None:
        """Consume one CQE and return the SQ slot it completes, or ``None`` if none is ready."""
        base = self.head * 8
        if cq[base + abi.CQE_HALF_W7] & 1 != self.phase:
            return None
        sq_head: int = cq[base + abi.CQE_HALF_SQ_HEAD]
        self.head += 1
        if self.head == self.depth:
            self.head = 0
            self.phase ^= 1
        return sq_head
