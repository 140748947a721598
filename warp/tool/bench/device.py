"""The device side of ``warpzip bench device``: one measured run on a fresh runtime, the DFX
counters and device CPU time it reads, and the device it runs against (``--root`` or its own)."""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, final

import zstandard

from warp import Runtime, abi, cdev
from warp.device.launch import DeviceProcess
from warp.dfx import Dfx, Engine, Queue
from warp.iommu.fault import FaultCounter
from warp.tool.bench.loops import Tally, async_loop, batch_loop, run_loop, sync_loop
from warp.tool.bench.measurement import DeviceCounters, Latency, Measurement
from warp.tool.bench.options import Options
from warp.tool.bench.progress import Progress
from warp.tool.units import NS


def device_pid(root: Path, name: str) -> int:
    """The PID of the device serving ``root``: the peer of a connection to its control socket
    (SO_PEERCRED), so a device this tool did not start is measured too."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
        sock.connect(str(cdev.DevicePaths(root, name).control))
        return cdev.peer_credentials(sock)[0]


def process_cpu_ns(pid: int) -> int:
    """User + system time of every thread of ``pid`` (``/proc/<pid>/stat`` fields 14 and 15,
    clock ticks; threads that ended are included, unlike a sum over ``task/*/schedstat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * NS // _CLK_TCK


_CLK_TCK: Final = os.sysconf("SC_CLK_TCK")


def snapshot(dfx: Dfx, qids: Sequence[int]) -> DeviceCounters:
    """The DFX counters a run reads, from one snapshot: its own queues' summed, the fault
    handler's and those of every engine of the compression pool, the one that serves its jobs."""
    now = dfx.snapshot()
    queues = [now.queues[q] for q in qids]
    engines = [e for e in now.engines if e[Engine.POOL] == abi.QcType.COMPRESS]
    return DeviceCounters(
        iopf=sum(q[Queue.IOPF] for q in queues),
        queue_jobs=sum(q[Queue.SUBMITTED] for q in queues),
        fault_pages=now.faults[FaultCounter.PAGES_OK],
        engine_busy_ns=tuple(e[Engine.BUSY_NS] for e in engines),
        engine_jobs=tuple(e[Engine.JOBS] for e in engines),
        batches=sum(q[Queue.BATCHES] for q in queues),
        interrupts=sum(q[Queue.INTERRUPTS] for q in queues),
        doorbells=sum(q[Queue.DOORBELLS] for q in queues))


def settled(dfx: Dfx, qids: Sequence[int], before: DeviceCounters, jobs: int, wait: float = 1.0) -> DeviceCounters:
    """The snapshot once the engines have booked the run's last batch (a CQE is visible to us a
    moment before the engine adds that batch to its counters)."""
    deadline = time.monotonic() + wait
    while True:
        after = snapshot(dfx, qids)
        delta = after - before
        if (delta.queue_jobs >= jobs and sum(delta.engine_jobs) >= jobs) or time.monotonic() > deadline:
            return after
        time.sleep(0.002)


def open_runtime(root: Path, queues: int, prefault: bool, used: set[int], attempts: int = 100) -> Runtime:
    """A fresh runtime whose queues are bound to its own address space.

    The device binds address spaces per process (one mm per process, as the kernel), and unbinds
    when it has processed the close of the process's last queue file — which happens a moment
    after :meth:`Runtime.close` returns. A runtime opened in that window is handed the previous
    runtime's mapping (same PASID, a heap that no longer exists) and every job fails with an
    address fault; so retry until no PASID is one of ``used`` (those of this process's earlier
    runtimes on this device, which never reuses a PASID), then add the new ones to it.
    """
    pasids: set[int] = set()
    for _ in range(attempts):
        rt = Runtime(root, driver="zip", queues=queues, prefault=prefault)
        assert rt.zip is not None  # driver="zip" raises NoDevice otherwise
        pasids = {q.pasid for q in rt.zip.statistics().per_queue}
        if not pasids & used:
            used.update(pasids)
            return rt
        rt.close()
        time.sleep(0.02)
    raise RuntimeError(f"the device kept binding new queues to an earlier runtime's address space (PASID {pasids})")


def device_label(mode: str, depth: int, prefault: bool) -> str:
    """A device run's name in the table and the JSON, e.g. ``device async d=32 prefault``."""
    return f"device {mode} d={depth} {'prefault' if prefault else 'no-prefault'}"


@final
@dataclass
class Run:
    """One measured run's fresh runtime, its queues' DFX rows, and the counters and clocks read
    when it starts (:meth:`begin`): what every kind of run measures against."""

    rt: Runtime
    dfx: Dfx
    qids: list[int]
    pid: int
    before: DeviceCounters | None = None
    _device_cpu0: int = 0
    _cpu0: int = 0

    def begin(self) -> None:
        self.before = snapshot(self.dfx, self.qids)
        self._device_cpu0 = process_cpu_ns(self.pid)
        self._cpu0 = time.process_time_ns()

    def cpu_ns(self) -> int:
        """This process's CPU since :meth:`begin`."""
        return time.process_time_ns() - self._cpu0

    def device_cpu_ns(self) -> int:
        """The device process's CPU since :meth:`begin`."""
        return process_cpu_ns(self.pid) - self._device_cpu0

    def counters(self, bds: int) -> DeviceCounters:
        """The DFX counters' growth once the engines counted ``bds`` BDs (:func:`settled`)."""
        assert self.before is not None  # begun
        return settled(self.dfx, self.qids, self.before, bds) - self.before


@contextlib.contextmanager
def fresh_run(root: Path, opts: Options, prefault: bool, used_pasids: set[int], pid: int) -> Iterator[Run]:
    """A :class:`Run` on a fresh runtime (fresh SVA heap, fresh queues); ``pid`` is the device's."""
    rt = open_runtime(root, opts.queues, prefault, used_pasids)
    dfx: Dfx | None = None
    try:
        assert rt.zip is not None  # driver="zip" raises NoDevice otherwise
        driver = rt.zip.statistics()
        assert driver.device is not None  # the zip driver is always on a device
        dfx = Dfx(cdev.DevicePaths(root, driver.device).dfx, 0, 0, create=False)
        yield Run(rt, dfx, [q.sqn for q in driver.per_queue], pid)
    finally:
        if dfx is not None:
            dfx.close()
        rt.close()


def measure_device(root: Path, opts: Options, blocks: Sequence[bytes], depth: int, prefault: bool,
                   progress: Progress, used_pasids: set[int], pid: int) -> Measurement:
    """One device run on a fresh runtime (fresh SVA heap, fresh queues); ``pid`` is the device's."""
    with fresh_run(root, opts, prefault, used_pasids, pid) as run:
        rt = run.rt
        comp = rt.compressor(opts.level)
        label = device_label(opts.mode, depth, prefault)
        tally = Tally()
        progress.start(label, opts.seconds)
        run.begin()
        if opts.mode == "sync":
            start, end = sync_loop(comp, blocks, opts.seconds, tally, progress)
        elif opts.mode == "batch":
            start, end = batch_loop(comp, blocks, depth, opts.seconds, tally, progress)
        else:
            start, end = run_loop(opts.loop, lambda: async_loop(rt, comp, blocks, depth, opts.seconds, tally,
                                                                progress))
        cpu = run.cpu_ns()
        counters = run.counters(tally.jobs + tally.errors)
        device_cpu = run.device_cpu_ns()
        used = rt.statistics()
        extra: dict[str, Any] = {
            "heap_prefaults": used.heap.misses, "heap_warm_allocs": used.heap.hits,
            "fallback_jobs": used.fallback_jobs,
            "verified": _verify(blocks[0], tally.first_frame),
            "error_statuses": tally.statuses,
        }
        m = Measurement(label=label, jobs=tally.jobs, bytes_in=tally.bytes_in, bytes_out=tally.bytes_out,
                        wall_ns=end - start, cpu_ns=cpu, latency=Latency.from_ns(tally.latencies),
                        samples=tuple(tally.latencies),
                        errors=tally.errors, mode=opts.mode, depth=depth, prefault=prefault,
                        counters=counters, extra=extra, device_cpu_ns=device_cpu)
        progress.finish(m)
        return m


def _verify(block: bytes, frame: bytes | None) -> bool | None:
    """The run's first job (block 0) decompresses back to its input."""
    if frame is None:
        return None
    try:
        return bool(zstandard.ZstdDecompressor().decompress(frame) == block)
    except zstandard.ZstdError:
        return False


@contextlib.contextmanager
def device_root(opts: Options, progress: Progress) -> Iterator[tuple[Path, int | None]]:
    """The root to bench: ``--root``, or an embedded device's (yields its PID, stopped after)."""
    if opts.root is not None:
        yield opts.root, None
        return
    with tempfile.TemporaryDirectory(prefix="warpzip-bench-") as scratch, \
            DeviceProcess(Path(scratch) / "root", *opts.device_args, log=Path(scratch) / "device.log") as device:
        pid = device.pid
        progress.note(f"started device pid {pid} ({' '.join(opts.device_args)}) in {device.root}")
        assert pid is not None  # started above
        yield device.root, pid
    progress.note(f"stopped device pid {pid}")
