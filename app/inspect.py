"""A JSON-ready picture of the device: sysfs attributes, queues, engines, faults — what
``/sys/class/uacce`` plus debugfs would show. Shared by ``GET /device`` and ``warpzip info``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from warp import devices
from warp.cdev import DevicePaths
from warp.device.core import QState
from warp.dfx import Dev, Dfx, Engine, Queue
from warp.iommu.fault import FaultCounter


def describe(root: Path) -> list[dict[str, Any]]:
    """Every device under ``root`` (isolated ones included), with its live counters."""
    return [_device(d.paths, {
        "name": d.name, "api": d.api, "flags": d.flags, "algorithms": list(d.algorithms),
        "available_instances": d.available_instances, "isolate": int(d.isolated),
        "isolate_strategy": d.isolate_strategy, "region_mmio_size": d.region_mmio_size,
        "region_dus_size": d.region_dus_size, "node_id": d.node_id,
    }) for d in devices(root, include_isolated=True)]


def _device(paths: DevicePaths, attrs: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"sysfs": attrs}
    try:
        dfx = Dfx(paths.dfx, 0, 0, create=False)
    except (OSError, ValueError):
        return out
    try:
        out["queues"] = [
            {"qid": qid, "state": QState(int(row[Queue.STATE])).name, "pasid": int(row[Queue.PASID]),
             "qc_type": "decompress" if int(row[Queue.QC_TYPE]) else "compress",
             "sq_pending": int(row[Queue.SQ_PENDING]),
             **{c.name.lower(): int(row[c]) for c in (Queue.SUBMITTED, Queue.COMPLETED_OK, Queue.COMPLETED_ERR,
                                                      Queue.BYTES_IN, Queue.BYTES_OUT, Queue.BATCHES,
                                                      Queue.DOORBELLS, Queue.INTERRUPTS, Queue.IOPF,
                                                      Queue.SEND_BUSY, Queue.ERR_BD, Queue.FLUSHED)}}
            for qid in range(dfx.queues) if int((row := dfx.queue(qid))[Queue.STATE]) or int(row[Queue.SUBMITTED])
        ]
        out["engines"] = [{"engine": eid, **{c.name.lower(): int(dfx.engine(eid)[c]) for c in Engine}}
                          for eid in range(dfx.engines)]
        out["iopf"] = {c.name.lower(): int(dfx.faults[c]) for c in FaultCounter if c < FaultCounter.HIST0}
        out["errors"] = {c.name.lower(): int(dfx.dev[c]) for c in Dev}
    finally:
        dfx.close()
    return out
