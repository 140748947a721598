"""The DFX snapshot (warp/dfx.py): every counter of the shared file as one typed record, read by a
process that maps the file read-only — the record every reader (``warpzip info``, ``GET /device``,
the Prometheus collector) uses instead of the file's rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from warp.dfx import Dev, Dfx, Engine, Queue, read_snapshot
from warp.iommu.fault import SERVICE_BUCKETS, FaultCounter


def test_a_reader_sees_what_the_device_wrote(tmp_path: Path) -> None:
    path = tmp_path / "dfx"
    device = Dfx(path, queues=4, engines=2, create=True)
    try:
        device.dev[Dev.ISOLATED] = 1
        device.queue(2)[Queue.SUBMITTED] = 7
        device.queue(2)[Queue.IOPF] = 3
        device.engine(1)[Engine.BUSY_NS] = 5_000
        device.faults[FaultCounter.PAGES_OK] = 11
        device.faults[FaultCounter.HIST0 + len(SERVICE_BUCKETS)] = 2  # the +Inf bucket
        snap = read_snapshot(path)
    finally:
        device.close()
    assert snap.device[Dev.ISOLATED] == 1
    assert len(snap.queues) == 4 and len(snap.engines) == 2
    assert snap.queues[2][Queue.IOPF] == 3
    assert snap.engines[1].named(Engine) == {"jobs": 0, "batches": 0, "busy_ns": 5_000, "bytes_in": 0,
                                             "bytes_out": 0, "errors": 0, "iopf": 0, "pool": 0, "dict_loads": 0}
    assert snap.faults[FaultCounter.PAGES_OK] == 11
    assert snap.fault_histogram == (0,) * len(SERVICE_BUCKETS) + (2,)


def test_only_queues_bound_or_ever_used_are_in_use(tmp_path: Path) -> None:
    device = Dfx(tmp_path / "dfx", queues=4, engines=1, create=True)
    try:
        device.queue(1)[Queue.STATE] = 2  # started, no job yet
        device.queue(3)[Queue.SUBMITTED] = 1  # put since, its counts stay
        snap = device.snapshot()
    finally:
        device.close()
    assert [qid for qid, _ in snap.queues_in_use()] == [1, 3]


def test_a_file_that_is_not_dfx_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other"
    path.write_bytes(bytes(4096))
    with pytest.raises(ValueError):
        read_snapshot(path)
    with pytest.raises(OSError):
        read_snapshot(tmp_path / "absent")
