"""The zstd device's ``uacce_ops``: the table of operations the uacce core calls, over the queue
pairs, the engines and RAS.

A thin facade, as ``zip_main.c`` is over ``qm.c``: queue pairs are :mod:`warp.device.qp`, the
engines that serve them :mod:`warp.device.engine`, hardware errors, isolation, reset and fault
injection :mod:`warp.device.ras` (parsing of injections in :mod:`warp.device.faults`), interrupt
moderation by time :mod:`warp.device.irq`. This module owns which queue pairs exist and answers
the core and the control socket.
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable
from typing import Final, final

from warp import abi, cdev
from warp.device.control import Reply
from warp.device.engine import Engines
from warp.device.faults import Injection, Reclaimer
from warp.device.pool import PoolSizes, Timing
from warp.device.qp import Qp, u64
from warp.device.ras import Ras
from warp.dfx import Dfx, Queue
from warp.iommu.mmu import Iommu, Mapping
from warp.zstream import DEFAULT_MEMORY

ALGORITHMS: Final = ("zstd", "lz77_zstd")


@final
class ZipDevice:
    """``uacce_ops`` of the zstd device plus its engines, error handling and fault injection."""

    name = "warp_zip-0"
    algorithms: tuple[str, ...] = ALGORITHMS

    def __init__(self, iommu: Iommu, dfx: Dfx, pools: PoolSizes, batch: int = 32,
                 irq_coalesce: int = 4, irq_delay_us: int = 0, reclaim_interval_ms: float = 0,
                 reclaim_fraction: float = 0.0, clock: Callable[[], float] = time.monotonic,
                 timing: Timing | None = None, stream_memory: int = DEFAULT_MEMORY) -> None:
        self.iommu = iommu
        self.dfx = dfx
        self._lock = threading.Lock()
        self._qps: dict[int, Qp] = {}
        self._next_qid = 0  # where the cyclic allocator looks first
        self._building: set[int] = set()  # ids handed out whose Qp is still being built
        self.ras = Ras(dfx.dev, iommu, self._taken, clock)
        self.engines = Engines(iommu, dfx, self.ras, pools, batch, irq_coalesce, irq_delay_us, timing,
                               stream_memory)
        self._reclaimer = (Reclaimer(iommu, reclaim_interval_ms / 1000, reclaim_fraction, self.ras.reclaimed)
                           if reclaim_interval_ms > 0 and reclaim_fraction > 0 else None)
        if self._reclaimer is not None:
            self._reclaimer.start()

    # ---- uacce_ops -------------------------------------------------------------------------
    def set_notifier(self, notify: Callable[[], None]) -> None:
        """The core's sysfs refresh, called when ``isolate`` or ``available_instances`` change."""
        self.ras.notify = notify

    def available_instances(self) -> int:
        """``hisi_qm_get_available_instances``: ``qp_num - qp_in_used``."""
        with self._lock:
            return self.dfx.queues - len(self._qps) - len(self._building)

    def isolated(self) -> bool:
        return self.ras.isolated()

    def isolate_err_threshold_read(self) -> int:
        return self.ras.errors.threshold

    def isolate_err_threshold_write(self, threshold: int) -> None:
        self.ras.set_threshold(threshold)

    def get_queue(self, mapping: Mapping) -> Qp:
        """``hisi_qm_create_qp``: EPERM while the QM is stopped for a reset, EBUSY when every
        queue is taken, else the next free id after the last one handed out (``idr_alloc_cyclic``
        on ``qm->qp_idr``): a put queue's id is not reused at once, so a late write to it by its
        old owner's id lands on no one."""
        self._check_running("create a queue")
        with self._lock:
            qid = self._alloc_qid()
            self._building.add(qid)
        try:
            qp = Qp.create(qid, mapping, u64(self.dfx.queue(qid)))
        except BaseException:
            with self._lock:
                self._building.discard(qid)
            raise
        with self._lock:
            self._building.discard(qid)
            self._qps[qid] = qp
        return qp

    def _alloc_qid(self) -> int:
        """The cyclic allocation itself (``_lock`` held); ids being built count as taken."""
        total = self.dfx.queues
        busy = set(self._qps) | self._building
        for step in range(total):
            qid = (self._next_qid + step) % total
            if qid not in busy:
                self._next_qid = (qid + 1) % total
                return qid
        raise OSError(errno.EBUSY, f"all {total} queues of QM are busy")

    def put_queue(self, qp: Qp) -> None:
        """``hisi_qm_uacce_put_queue``: release the queue pair; its id is free once it is closed."""
        qp.counters[Queue.PASID] = 0
        with self._lock:
            self._qps.pop(qp.qid, None)
            self._building.add(qp.qid)  # not free until its fds are gone
        try:
            qp.close()
        finally:
            with self._lock:
                self._building.discard(qp.qid)

    def start_queue(self, qp: Qp) -> None:
        """``hisi_qm_start_qp``: EPERM while the QM is stopped for a reset (``qm_qp_avail_state``);
        isolation is no reason (the kernel has no such check)."""
        self._check_running("start a queue")
        self.engines.start(qp)

    def stop_queue(self, qp: Qp) -> None:
        self.engines.stop(qp)

    def mmap(self, qp: Qp, region: abi.Region, size: int) -> list[int]:
        """``hisi_qm_uacce_mmap``: the MMIO doorbell window may be mapped up to its size (v2
        without doorbell isolation: ``QM_DOORBELL_PAGE_NR`` + 0x1000 / PAGE_SIZE pages), the DUS
        only whole (``qp->qdma.size``); EINVAL otherwise."""
        if region is abi.Region.MMIO:
            if size > abi.MMIO_SIZE:
                raise OSError(errno.EINVAL, f"MMIO is at most {abi.MMIO_SIZE} bytes")
            return [qp.mmio_fd, qp.db_fd]
        if size != abi.DUS_SIZE:
            raise OSError(errno.EINVAL, f"DUS must be mapped whole ({abi.DUS_SIZE} bytes)")
        return [qp.dus_fd]

    def ioctl(self, qp: Qp, message: cdev.Message) -> cdev.Message:
        if message.get("op") == "set_qp_ctx":
            try:
                qp.qc_type = abi.QcType(int(message.get("qc_type", -1)))
            except ValueError:
                raise OSError(errno.EINVAL, "qc_type must be 0 (compress) or 1 (decompress)") from None
            qp.counters[Queue.QC_TYPE] = qp.qc_type
            return {"sqn": qp.qid}
        if message.get("op") == "set_qp_info":  # UACCE_CMD_QM_SET_QP_INFO: the kernel reports the geometry
            return {"sqe_size": abi.SQE_SIZE, "sq_depth": abi.QUEUE_DEPTH, "cq_depth": abi.QUEUE_DEPTH}
        raise OSError(errno.EINVAL, f"unknown ioctl {message.get('op')!r}")

    def irq_fd(self, qp: Qp) -> int:
        return qp.irq_fd

    def _check_running(self, what: str) -> None:
        if self.ras.qm_stopped:
            raise OSError(errno.EPERM, f"cannot {what}: the QM is stopped (a controller reset runs or failed)")

    def close(self) -> None:
        if self._reclaimer is not None:
            self._reclaimer.close()
        self.engines.close()
        self.ras.close()

    # ---- control: fault injection and reset ------------------------------------------------
    def control(self, message: cdev.Message) -> Reply:
        """One request from the control socket (see ``warp.device.control``)."""
        cmd = message.get("cmd")
        if cmd == "reset":
            return {"resets": self.ras.reset(), "isolated": self.ras.isolated()}, None
        if cmd == "status":
            return self.ras.status(), None
        if cmd != "inject":
            raise OSError(errno.EINVAL, f"unknown control command {cmd!r}")
        reply = self.ras.inject(Injection.parse(message))
        with self._lock:  # batches in progress look at the new state at their next job
            for qp in self._qps.values():
                qp.halt = True
        return reply

    def _taken(self) -> list[Qp]:
        """The queue pairs taken now (RAS walks them to isolate or reset)."""
        with self._lock:
            return list(self._qps.values())
