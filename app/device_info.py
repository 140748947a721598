"""A JSON-ready picture of the device: sysfs attributes, queues, engines, faults — what
``/sys/class/uacce`` plus debugfs would show. Shared by ``GET /device`` and ``warpzip info``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from warp import devices
from warp.cdev import DevicePaths, device_running
from warp.device.core import QState
from warp.dfx import Dev, Engine, Queue, read_snapshot
from warp.iommu.fault import FaultCounter

#: The per-queue counters listed, after state, pasid, qc_type and sq_pending.
QUEUE_COUNTERS: Final = (Queue.SUBMITTED, Queue.COMPLETED_OK, Queue.COMPLETED_ERR, Queue.BYTES_IN, Queue.BYTES_OUT,
                         Queue.BATCHES, Queue.DOORBELLS, Queue.INTERRUPTS, Queue.IOPF, Queue.SEND_BUSY,
                         Queue.ERR_BD, Queue.FLUSHED)


def describe(root: Path) -> list[dict[str, Any]]:
    """Every device under ``root`` (isolated ones included), with its counters; ``running`` is
    false when no process holds the root any more (the files and last counters of a device that
    died stay behind, and must not read as a live device)."""
    running = device_running(root)
    return [_device(d.paths, running, {
        "name": d.name, "api": d.api, "flags": d.flags, "algorithms": list(d.algorithms),
        "available_instances": d.available_instances, "isolate": int(d.isolated),
        "isolate_strategy": d.isolate_strategy, "region_mmio_size": d.region_mmio_size,
        "region_dus_size": d.region_dus_size, "node_id": d.node_id,
    }) for d in devices(root, every=True)]


def _device(paths: DevicePaths, running: bool, attrs: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"running": running, "sysfs": attrs}
    try:
        dfx = read_snapshot(paths.dfx)
    except (OSError, ValueError):
        return out
    out["queues"] = [
        {"qid": qid, "state": QState(row[Queue.STATE]).name, "pasid": row[Queue.PASID],
         "qc_type": "decompress" if row[Queue.QC_TYPE] else "compress", "sq_pending": row[Queue.SQ_PENDING],
         **row.named(QUEUE_COUNTERS)}
        for qid, row in dfx.queues_in_use()]
    out["engines"] = [{"engine": eid, **row.named(Engine), "pool": "decompress" if row[Engine.POOL] else "compress"}
                      for eid, row in enumerate(dfx.engines)]
    out["iopf"] = dfx.faults.named(c for c in FaultCounter if c < FaultCounter.HIST0)
    out["errors"] = dfx.device.named(Dev)
    return out
