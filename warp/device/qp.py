"""Queue pairs: one hardware queue's memory, its state, and the decoding of its doorbells.

The queue-pair half of the HiSilicon QM driver (``drivers/crypto/hisilicon/qm.c``:
``hisi_qm_create_qp``, ``qm_qp_avail_state``, the doorbell words of ``qm_db_v2``). The engines that
serve a queue are in :mod:`warp.device.engine`; what isolation and reset do to it in
:mod:`warp.device.ras`.

Queue memory (MMIO doorbell page and DUS rings) is a memfd per queue pair, created when the queue
is taken: a memfd mapping cannot be revoked from the other process, so a fresh one per get_queue
gives the guarantee that ``unmap_mapping_range`` gives the kernel — a process that put its queue
cannot write into the next owner's rings.
"""

from __future__ import annotations

import enum
import mmap
import os
import threading
from dataclasses import dataclass, field
from typing import Final, final

import numpy as np
import numpy.typing as npt

from warp import abi, codec
from warp.device.core import QState
from warp.dfx import Queue
from warp.iommu.mmu import Mapping
from warp.ring import CqProducer, DusView, SqConsumer

# Plain ints for the hot path: a module global is one lookup, ``abi.DoorbellCmd.SQ`` three.
_SQ: Final = int(abi.DoorbellCmd.SQ)
_CQ: Final = int(abi.DoorbellCmd.CQ)


class QpState(enum.Enum):
    """Where a queue pair is in its life, as the QM's ``qp_status`` (QP_INIT … QP_CLOSE)."""

    INIT = "init"  # taken by get_queue: rings exist, no engine looks at them
    STARTED = "started"  # start_queue: its doorbells reach the engines
    STOPPED = "stopped"  # stop_queue: drained (or the drain failed), no engine takes it again
    CLOSED = "closed"  # put_queue: its memory and fds are released; nothing may touch them


#: The legal moves, as ``qm_qp_avail_state`` checks them. A stopped queue is put, never restarted:
#: the uacce core puts a queue on PUT_Q or close, and a new open takes a fresh one.
_NEXT: Final[dict[QpState, frozenset[QpState]]] = {
    QpState.INIT: frozenset({QpState.STARTED, QpState.CLOSED}),
    QpState.STARTED: frozenset({QpState.STOPPED}),
    QpState.STOPPED: frozenset({QpState.CLOSED}),
    QpState.CLOSED: frozenset(),
}

#: The ``uacce_q_state`` each state shows in the queue's DFX ``STATE`` gauge (0 also means free).
_GAUGE: Final = {QpState.INIT: QState.INIT, QpState.STARTED: QState.STARTED, QpState.STOPPED: QState.INIT,
                 QpState.CLOSED: QState.ZOMBIE}


@final
@dataclass(eq=False)
class Qp:
    """One hardware queue pair and everything the engines need to serve it.

    ``lock`` is held by the engine serving the queue (one at a time) and by a stop; ``irq_lock``
    guards what the interrupt timer, isolation and reset share with it, and every change of
    ``state`` (see :meth:`set_state`).
    """

    qid: int
    mapping: Mapping
    counters: memoryview  # the queue's DFX row (see u64)
    mmio_fd: int
    dus_fd: int
    mmio: mmap.mmap
    dus: mmap.mmap
    view: DusView
    latches: memoryview  # the four doorbell latches and the kick word (see u64)
    db_fd: int
    irq_fd: int
    memory: codec.Pointer
    sq: SqConsumer = field(default_factory=SqConsumer)
    cq: CqProducer = field(default_factory=CqProducer)
    qc_type: abi.QcType = abi.QcType.COMPRESS
    lock: threading.Lock = field(default_factory=threading.Lock)
    state: QpState = QpState.INIT
    # Not a state but a request: leave the batch loop at the next job boundary and look at the
    # queue and device state again (stop, isolation and fault injection raise it).
    halt: bool = False
    device_kicks: int = 0  # doorbell kicks the device wrote itself (not counted as doorbells)
    irq_lock: threading.Lock = field(default_factory=threading.Lock)
    irq_count: int = 0  # completions not yet signalled (time moderation)
    irq_deadline: int = 0

    @classmethod
    def create(cls, qid: int, mapping: Mapping, counters: memoryview) -> Qp:
        """Take queue pair ``qid`` for ``mapping``: fresh memfds for its regions, fresh eventfds,
        INIT. ``counters`` is its DFX row, cumulative per queue pair across owners."""
        mmio_fd = _memfd(f"warp-qp{qid}-mmio", abi.MMIO_SIZE)
        dus_fd = _memfd(f"warp-qp{qid}-dus", abi.DUS_SIZE)
        mmio = mmap.mmap(mmio_fd, abi.MMIO_SIZE)
        dus = mmap.mmap(dus_fd, abi.DUS_SIZE)
        latches = u64(abi.doorbell_words(mmio))
        latches[abi.KICK] = 1  # no engine awake on it: the first doorbell must kick
        counters[Queue.SQ_PENDING] = 0
        counters[Queue.PASID] = mapping.pasid
        counters[Queue.STATE] = _GAUGE[QpState.INIT]
        return cls(qid=qid, mapping=mapping, counters=counters, mmio_fd=mmio_fd, dus_fd=dus_fd, mmio=mmio,
                   dus=dus, view=DusView.over(memoryview(dus)), latches=latches,
                   db_fd=os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC),
                   irq_fd=os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC),
                   memory=codec.pointer(mapping.heap))

    @property
    def closed(self) -> bool:
        """Whether its fds are gone (read under ``irq_lock`` by whoever would write to them)."""
        return self.state is QpState.CLOSED

    def set_state(self, new: QpState) -> None:
        """The one place a queue pair changes state: refused unless :data:`_NEXT` allows the move
        (a device bug, as ``qm_qp_avail_state`` answering false), and shown in the DFX gauge."""
        with self.irq_lock:
            if new not in _NEXT[self.state]:
                raise RuntimeError(f"queue {self.qid}: no move from {self.state.name} to {new.name}")
            self.state = new
            self.counters[Queue.STATE] = _GAUGE[new]

    def close(self) -> None:
        """CLOSED, then release its memory and fds."""
        self.set_state(QpState.CLOSED)
        codec.release(self.memory)
        self.view.release()
        self.latches.release()
        self.mmio.close()
        self.dus.close()
        for fd in (self.mmio_fd, self.dus_fd, self.db_fd, self.irq_fd):
            os.close(fd)


def u64(words: npt.NDArray[np.uint64]) -> memoryview:
    """The same shared words as a memoryview of u64: reading or updating an element costs a
    third of a numpy scalar's (the engines touch ~20 per batch), and an aligned 8-byte element
    store is still one store instruction, as DESIGN's rule for shared words asks."""
    return words.data.cast("B").cast("Q")


def sq_tail(word: int, qid: int) -> int:
    """The tail of an SQ doorbell latch word (v2 encoding), or -1 if it is not a valid SQ doorbell
    of queue ``qid`` — a latch never written, another queue's number, a bad command, an index past
    the ring. Decoded inline: ``abi.decode_doorbell`` raises on an unknown command."""
    tail = (word >> 32) & 0xFFFF
    if word & 0xFFF != qid or (word >> 12) & 0xF != _SQ or tail >= abi.QUEUE_DEPTH:
        return -1
    return tail


def cq_doorbell(qp: Qp) -> int:
    """Apply the CQ doorbell latch (slots before its index are free again); its priority.

    A latch that is not a CQ doorbell of this queue, or whose index is past the ring, is
    ignored (interrupts stay off), as hardware ignores a doorbell it cannot decode.
    """
    word: int = qp.latches[_CQ]
    if word & 0xFFF != qp.qid or (word >> 12) & 0xF != _CQ or (word >> 32) & 0xFFFF >= qp.cq.depth:
        return 0
    qp.cq.doorbell((word >> 32) & 0xFFFF)
    return word >> 48


def interrupt(qp: Qp) -> None:
    """Raise the queue's interrupt (moderated: once per ``irq_coalesce`` CQEs and per batch end)."""
    os.eventfd_write(qp.irq_fd, 1)
    qp.counters[Queue.INTERRUPTS] += 1


def _memfd(name: str, size: int) -> int:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    os.ftruncate(fd, size)
    return fd
