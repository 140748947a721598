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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Generic, TypeVar, final

import numpy as np
import numpy.typing as npt

from warp import shm
from warp.iommu.fault import COUNTER_COLUMNS, SERVICE_BUCKETS, FaultCounter

MAGIC: Final = 0x5741_5250_4446_5801  # "WARPDFX" v1
COLUMNS: Final = 32
assert COUNTER_COLUMNS <= COLUMNS


class Header(enum.IntEnum):
    MAGIC = 0
    QUEUES = 1
    ENGINES = 2


class Dev(enum.IntEnum):
    """Device-wide counters and gauges."""

    HW_ERRORS = 0  # hardware errors ever (injected RAS errors)
    RESETS = 1  # controller resets, automatic (hardware errors) and ``warpzip device reset``, failed ones too
    ISOLATED = 2  # gauge: 1 while isolated (the ``isolate`` attribute)
    CQ_OVERFLOWS = 3
    LAST_HW_ERROR_NS = 4  # wall-clock time of the last hardware error, ns since the epoch
    HW_ERRORS_WINDOW = 5  # gauge: hardware errors in the last hour, as isolation counts them
    ISOLATE_STRATEGY = 6  # gauge: the threshold in force (0 = never isolate)
    ISOLATIONS = 7  # times the device isolated itself
    HUNG = 8  # gauge: 1 while an injected hang keeps the engines from fetching
    HW_ERRORS_PENDING = 9  # gauge: injected hardware errors not yet delivered
    SLOW_FACTOR_MILLI = 10  # gauge: injected slow-down x 1000 (1000 = full speed)
    RECLAIMED_PAGES = 11  # pages the reclaim simulator or an IOPF storm made non-present
    RECLAIM_PASSES = 12
    INJECTIONS = 13  # fault-injection commands accepted
    AEQ_CQ_OVERFLOW = 14  # AEQEs the QM driver handled, by type (QM_CQ_OVERFLOW, QM_EQ_OVERFLOW, QM_CQE_ERROR)
    AEQ_EQ_OVERFLOW = 15
    AEQ_CQE_ERROR = 16
    AEQ_LOST = 17  # events the hardware could not post: the AEQ was full
    QPS_DISABLED = 18  # queue pairs qm_disable_qp stopped (TX flag, stop, RX flag)
    FUNCTION_RESETS = 19  # qm_reset_function runs (an EQ overflow)
    RESET_FAILURES = 20  # controller resets that failed (each isolates the device)
    RESET_FAILS_PENDING = 21  # gauge: injected reset failures not yet delivered
    QM_STOPPED = 22  # gauge: 1 while the QM is stopped (a reset runs, or the last one failed)
    STREAM_MEMORY = 23  # gauge: bytes the stream contexts held now were charged (zstd's estimates)
    STREAM_MEMORY_LIMIT = 24  # gauge: --stream-memory
    STREAM_REFUSALS = 25  # stream first BDs failed NO_CTX_MEMORY


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
    SEND_BUSY = 13  # engine turns that found the SQ full (depth - 1 outstanding): the next send is EBUSY
    ERR_BD = 14  # SQEs an engine completed with an error status (ZIP dfx err_bd_cnt)
    FLUSHED = 15  # SQEs a stop left unfetched, without a CQE, because its drain failed (hung engine)
    ERR_ADDR_FAULT = 16  # ERR_BD broken down by status from here on
    ERR_HW = 17
    ERR_DST_TOO_SMALL = 18
    ERR_CORRUPT_INPUT = 19
    ERR_BAD_SQE = 20  # bad algorithm, length or level
    CQ_OVERFLOWS = 21  # completions lost to a full CQ (the queue is then disabled)


class Engine(enum.IntEnum):
    """Per-engine counters: summed over engines the job columns equal the per-queue totals;
    DICT_LOADS is the engine's own."""

    JOBS = 0
    BATCHES = 1
    BUSY_NS = 2
    BYTES_IN = 3
    BYTES_OUT = 4
    ERRORS = 5
    IOPF = 6
    POOL = 7  # gauge: the engine's pool, as abi.QcType (0 compression, 1 decompression)
    DICT_LOADS = 8  # zstd dictionaries the engine loaded (once per context, not per job)


ROW_HEADER: Final = 0
ROW_DEV: Final = 1
ROW_FAULTS: Final = 2
ROW_QUEUES: Final = 3


Column = TypeVar("Column", bound=enum.IntEnum)


@final
@dataclass(frozen=True)
class Counters(Generic[Column]):
    """One row of counters as plain integers, read by its column enum (``row[Queue.IOPF]``)."""

    values: tuple[int, ...]

    def __getitem__(self, column: Column) -> int:
        return self.values[column]

    def named(self, columns: Iterable[Column]) -> dict[str, int]:
        """``columns`` by lower-case name, for JSON."""
        return {column.name.lower(): self.values[column] for column in columns}


@final
@dataclass(frozen=True)
class DfxSnapshot:
    """Every DFX counter at one moment: what readers (``warpzip info``, ``GET /device``, the
    Prometheus collector, the bench) use instead of the file's rows. Each counter is one aligned
    word, read once; the record is not atomic across counters, as debugfs is not."""

    device: Counters[Dev]
    faults: Counters[FaultCounter]
    queues: tuple[Counters[Queue], ...]  # by qid
    engines: tuple[Counters[Engine], ...]  # by engine id

    @property
    def fault_histogram(self) -> tuple[int, ...]:
        """I/O page-fault service times: a count per bucket of ``SERVICE_BUCKETS``, then +Inf."""
        start = FaultCounter.HIST0
        return self.faults.values[start:start + len(SERVICE_BUCKETS) + 1]

    def queues_in_use(self) -> Iterator[tuple[int, Counters[Queue]]]:
        """``(qid, counters)`` of the queues bound now or that ever fetched a job: readers list
        only these, so their output grows with the queues used, not with the device's 64."""
        for qid, row in enumerate(self.queues):
            if row[Queue.STATE] or row[Queue.SUBMITTED]:
                yield qid, row


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
        return self._row(ROW_DEV)

    @property
    def faults(self) -> npt.NDArray[np.uint64]:
        return self._row(ROW_FAULTS)

    def queue(self, qid: int) -> npt.NDArray[np.uint64]:
        return self._row(ROW_QUEUES + qid)

    def engine(self, eid: int) -> npt.NDArray[np.uint64]:
        return self._row(ROW_QUEUES + self.queues + eid)

    def snapshot(self) -> DfxSnapshot:
        """Every counter now, as a record (one copy of the table)."""
        rows: list[list[int]] = self.table.tolist()
        queues = rows[ROW_QUEUES:ROW_QUEUES + self.queues]
        engines = rows[ROW_QUEUES + self.queues:ROW_QUEUES + self.queues + self.engines]
        return DfxSnapshot(device=Counters(tuple(rows[ROW_DEV])), faults=Counters(tuple(rows[ROW_FAULTS])),
                           queues=tuple(Counters(tuple(row)) for row in queues),
                           engines=tuple(Counters(tuple(row)) for row in engines))

    def _row(self, row: int) -> npt.NDArray[np.uint64]:
        view: npt.NDArray[np.uint64] = self.table[row]
        return view

    def close(self) -> None:
        """Unmap now if no row view is still referenced; otherwise the last view unmaps it."""
        del self.table
        shm.unmap(self._map)


def read_snapshot(path: Path) -> DfxSnapshot:
    """Map the DFX file at ``path`` read-only, take a snapshot, unmap. Raises ``OSError`` when
    there is no file and ``ValueError`` when it is not a DFX file."""
    dfx = Dfx(path, 0, 0, create=False)
    try:
        return dfx.snapshot()
    finally:
        dfx.close()
