"""The asynchronous event queue (AEQ): how the hardware tells the QM driver that a queue pair
broke, and the driver's thread that answers (``qm_aeq_irq`` / ``qm_aeq_thread`` in
``drivers/crypto/hisilicon/qm.c``, reference §2.6).

An AEQE is one ``u32``: ``qp_id[15:0]``, the phase bit 16, the event type from bit 17
(:class:`AeqType`). The hardware writes an AEQE at the tail with the current phase and raises
the AEQ interrupt; the driver walks from its head while the phase matches (initially 1, flipped
at each wrap), handles each event, and rings the AEQ doorbell with its new head, which gives the
slots back. The user never sees this ring: it lives in the device process, which is the model's
kernel side as well as its hardware.

:class:`AeqRing` is the ring alone (sans-I/O: both ends, no thread), :class:`Aeq` adds the
interrupt and the driver's thread, which hands each event to a handler (``Ras``).
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable
from typing import Final, final

from warp import abi

log = logging.getLogger("warp.device")

#: ``QM_AEQE_PHASE`` and ``QM_AEQE_TYPE_SHIFT``; ``QM_AEQE_CQN_MASK`` is the low 16 bits.
PHASE_BIT: Final = 1 << 16
TYPE_SHIFT: Final = 17
QP_MASK: Final = 0xFFFF


class AeqType(enum.IntEnum):
    """The AEQE types of qm.c."""

    CQ_OVERFLOW = 0  # QM_CQ_OVERFLOW: "cq overflow, stop qp", then as a CQE error
    EQ_OVERFLOW = 1  # QM_EQ_OVERFLOW: "eq overflow, reset function"
    CQE_ERROR = 2  # QM_CQE_ERROR: qm_disable_qp


def encode(qp_id: int, kind: int, phase: int) -> int:
    """One AEQE's ``dw0``."""
    return (qp_id & QP_MASK) | (phase & 1) << 16 | int(kind) << TYPE_SHIFT


def decode(dw0: int) -> tuple[int, int]:
    """``(qp_id, type)`` of an AEQE (the type as a number: the hardware may write one qm.c does not know)."""
    return dw0 & QP_MASK, dw0 >> TYPE_SHIFT


@final
class AeqRing:
    """``QM_Q_DEPTH`` AEQEs. The producer knows the consumer's head only from the AEQ doorbell
    (:meth:`doorbell`), as hardware does, and keeps one slot empty (as the SQ) so a head that
    did not move is told apart from a full ring; an event that finds no free slot is lost
    (False), and the caller counts it."""

    def __init__(self, depth: int = abi.QUEUE_DEPTH) -> None:
        self.depth = depth
        self.words = [0] * depth  # zeroed memory: phase 0, which the initial consumer phase 1 does not match
        self._tail = 0
        self._tail_phase = 1
        self._returned = 0  # the head the last doorbell gave back
        self._used = 0
        self.head = 0
        self.phase = 1  # the consumer's aeqc_phase

    def post(self, qp_id: int, kind: int) -> bool:
        """The hardware writes one AEQE (of any type: qm.c logs those it does not know); False if
        the ring is full."""
        if self._used == self.depth - 1:
            return False
        self.words[self._tail] = encode(qp_id, kind, self._tail_phase)
        self._used += 1
        self._tail += 1
        if self._tail == self.depth:
            self._tail, self._tail_phase = 0, self._tail_phase ^ 1
        return True

    def take(self) -> list[int]:
        """The driver's walk: every AEQE whose phase matches, head advanced (flipping the phase at
        the wrap). The slots are not free until :meth:`doorbell`."""
        events = []
        while (self.words[self.head] >> 16) & 1 == self.phase:
            events.append(self.words[self.head])
            self.head += 1
            if self.head == self.depth:
                self.head, self.phase = 0, self.phase ^ 1
        return events

    def doorbell(self, head: int) -> None:
        """``qm_db(qm, 0, QM_DOORBELL_CMD_AEQ, head, 0)``: the slots before ``head`` are free."""
        self._used -= (head - self._returned) % self.depth
        self._returned = head


_KNOWN: Final = frozenset(int(t) for t in AeqType)

#: What the driver does with one event: ``(qp_id, type)``.
Handler = Callable[[int, AeqType], None]


@final
class Aeq:
    """The ring, its interrupt, and the driver thread that handles the events in order."""

    def __init__(self, handle: Handler, lost: Callable[[], None], depth: int = abi.QUEUE_DEPTH) -> None:
        self._handle = handle
        self._lost = lost
        self._ring = AeqRing(depth)
        self._cond = threading.Condition()
        self._raised = False
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="qm-aeq", daemon=True)
        self._thread.start()

    def post(self, qp_id: int, kind: int) -> None:
        """The hardware reports an event and raises the AEQ interrupt (any thread; never blocks)."""
        with self._cond:
            posted = self._ring.post(qp_id, kind)
            self._raised = True
            self._cond.notify()
        if not posted:
            log.error("AEQ full: event type %d of queue %d lost", kind, qp_id)
            self._lost()

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._raised and not self._closing:
                    self._cond.wait()
                if self._closing:
                    return
                self._raised = False
                events = self._ring.take()
            for dw0 in events:
                qp_id, kind = decode(dw0)
                if kind not in _KNOWN:
                    log.error("AEQ: unknown error type %d", kind)
                    continue
                try:
                    self._handle(qp_id, AeqType(kind))
                except Exception:  # a model bug must not end the event thread
                    log.exception("AEQ: handling %#x failed", dw0)
            with self._cond:
                self._ring.doorbell(self._ring.head)
