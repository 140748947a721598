"""DFX counters: the device's statistics in a shared file that any process maps read-only.

The device writes each counter with a single aligned ``uint64`` store; a collector (``warpzip
info``, the Prometheus exporter) maps the file and reads without a round trip to the device, as
debugfs counters are read on real hardware. Lives in ``warp`` (not ``warp.device``) because both
sides need the layout.
"""

from __future__ import annotations

import enum
import mmap
import os
from pathlib import Path
from typing import Final, final

import numpy as np
import numpy.typing as npt

from warp import shm
from warp.iommu.fault import COUNTER_COLUMNS

MAGIC: Final = 0x5741_5250_4446_5801  # "WARPDFX" v1
COLUMNS: Final = 32
assert COUNTER_COLUMNS <= COLUMNS


class Header(enum.IntEnum):
    MAGIC = 0
    QUEUES = 1
    ENGINES = 2


class Dev(enum.IntEnum):
    """Device-wide counters."""

    HW_ERRORS = 0
    RESETS = 1
    ISOLATED = 2
    CQ_OVERFLOWS = 3


class Queue(enum.IntEnum):
    """Per-queue counters; STATE and PASID are gauges (uacce_q_state, 0 when unbound)."""

    STATE = 0
    PASID = 1
    SUBMITTED = 2  # SQEs fetched by an engine
    COMPLETED_OK = 3
    COMPLETED_ERR = 4
    BYTES_IN = 5
    BYTES_OUT = 6
    BATCHES = 7
    DOORBELLS = 8
    INTERRUPTS = 9
    IOPF = 10
    SQ_PENDING = 11  # doorbelled SQEs not yet fetched (gauge)
    QC_TYPE = 12


class Engine(enum.IntEnum):
    JOBS = 0
    BATCHES = 1
    BUSY_NS = 2
    BYTES_IN = 3


ROW_HEADER: Final = 0
ROW_DEV: Final = 1
ROW_FAULTS: Final = 2
ROW_QUEUES: Final = 3


@final
class Dfx:
    """Row-addressed view of the DFX file."""

    def __init__(self, path: Path, queues: int, engines: int, create: bool) -> None:
        rows = ROW_QUEUES + queues + engines
        size = rows * COLUMNS * 8
        if create:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            os.ftruncate(fd, size)
            access = mmap.ACCESS_WRITE
        else:
            fd = os.open(path, os.O_RDONLY)
            size = os.fstat(fd).st_size
            access = mmap.ACCESS_READ
        try:
            self._map = mmap.mmap(fd, size, access=access)
        finally:
            os.close(fd)
        table = np.frombuffer(self._map, dtype=np.uint64)
        self.table: npt.NDArray[np.uint64] = table.reshape(-1, COLUMNS)
        if create:
            self.table[ROW_HEADER, Header.QUEUES] = queues
            self.table[ROW_HEADER, Header.ENGINES] = engines
            self.table[ROW_HEADER, Header.MAGIC] = MAGIC
        elif int(self.table[ROW_HEADER, Header.MAGIC]) != MAGIC:
            raise ValueError(f"{path} is not a warp DFX file")
        self.queues = int(self.table[ROW_HEADER, Header.QUEUES])
        self.engines = int(self.table[ROW_HEADER, Header.ENGINES])

    @property
    def dev(self) -> npt.NDArray[np.uint64]:
        return self.table[ROW_DEV]

    @property
    def faults(self) -> npt.NDArray[np.uint64]:
        return self.table[ROW_FAULTS]

    def queue(self, qid: int) -> npt.NDArray[np.uint64]:
        return self.table[ROW_QUEUES + qid]

    def engine(self, eid: int) -> npt.NDArray[np.uint64]:
        return self.table[ROW_QUEUES + self.queues + eid]

    def close(self) -> None:
        """Unmap now if no row view is still referenced; otherwise the last view unmaps it."""
        del self.table
        shm.unmap(self._map)
