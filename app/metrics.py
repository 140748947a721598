"""Prometheus metrics: RED for the HTTP API, USE for the accelerator.

With several worker processes a scrape reaches whichever worker the kernel picks, yet must report
totals over all of them, with counters that never go backwards. So every worker keeps its
instruments in prometheus-client's multiprocess mode (one mmap file per process in a directory
that ``serve`` creates and shares, see :func:`use_shared_directory`) and a scrape merges all files.
Counters of a worker that died stay in the sum; its gauges drop out (``mark_process_dead``).

The worker's own runtime (queues, heap, fallback) is copied into those instruments once a second
by :meth:`Metrics.sync`; the device's DFX counters are device-wide and are read at scrape time
from the shared DFX file by :class:`AcceleratorCollector`, so the hot path pays nothing for them.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Final, final

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client import multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from app import __version__
from app.admission import Admission
from warp import Runtime, cdev
from warp.dfx import Dev, Dfx, Engine, Queue
from warp.iommu.fault import SERVICE_BUCKETS, FaultCounter

LATENCY_BUCKETS: Final = (1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0,
                          2.5, 5.0, 10.0)
DEVICE_NAME: Final = "warp_zip-0"
#: The code recorded when the client disconnects before its answer (nginx's convention).
CLIENT_CLOSED: Final = 499
MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
SYNC_INTERVAL: Final = 1.0

disable_created_metrics()  # *_created series double the exposition and no dashboard uses them


def use_shared_directory(path: Path) -> None:
    """Put this process and its future children in multiprocess mode, writing under ``path``.

    Must run before the first instrument is created (prometheus-client picks its value class
    when it is imported, hence the reload of that choice here).
    """
    from prometheus_client import values

    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROC_ENV] = str(path)
    values.ValueClass = values.get_value_class()


def worker_exited(pid: int) -> None:
    """Drop a dead worker's live gauges; its counters keep counting in the totals."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)


@final
class Metrics:
    """This worker's instruments and the registry a scrape renders."""

    def __init__(self, runtime: Callable[[], Runtime | None], admission: Admission, root: Path) -> None:
        self.shared = bool(os.environ.get(MULTIPROC_ENV))
        r = None if self.shared else CollectorRegistry()
        self.requests = Counter("warpzip_http_requests", "HTTP requests answered, by route, method and status code.",
                                ["route", "method", "code"], registry=r)
        self.latency = Histogram("warpzip_http_request_duration_seconds",
                                 "Time from request start to the last response byte handed to the transport.",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("warpzip_http_requests_in_flight", "HTTP requests being handled.", registry=r,
                               multiprocess_mode="livesum")
        self.input_bytes = Counter("warpzip_compressor_input_bytes",
                                   "Bytes given to the compressor or decompressor.", ["direction"], registry=r)
        self.output_bytes = Counter("warpzip_compressor_output_bytes",
                                    "Bytes the compressor or decompressor produced.", ["direction"], registry=r)
        self.job_latency = Histogram("warpzip_queue_job_duration_seconds",
                                     "Time from handing a job to the driver to its completion.", ["driver"],
                                     buckets=LATENCY_BUCKETS, registry=r)
        self.admission_pending = Gauge("warpzip_admission_pending", "Requests admitted and not finished.",
                                       registry=r, multiprocess_mode="livesum")
        self.admission_limit = Gauge("warpzip_admission_limit", "Requests a worker admits before answering 503.",
                                     registry=r, multiprocess_mode="livesum")
        self.admission_rejected = Counter("warpzip_admission_rejected",
                                          "Requests answered 503 because too many were in progress.", registry=r)
        self._runtime_gauges = {
            name: Gauge(name, text, ["driver"], registry=r, multiprocess_mode="livesum")
            for name, text in (("warpzip_queue_sq_depth", "Jobs in the workers' submission queues."),
                               ("warpzip_queue_sq_capacity", "Slots in the workers' submission queues."))}
        self._runtime_counters = {
            name: Counter(name.removesuffix("_total"), text, ["driver"], registry=r)
            for name, text in (("warpzip_queue_jobs_submitted", "Jobs the workers submitted."),
                               ("warpzip_queue_jobs_completed", "Jobs completed for the workers."),
                               ("warpzip_queue_jobs_failed", "Jobs completed with an error status."),
                               ("warpzip_queue_doorbells", "SQ doorbells the workers rang."))}
        self.fallback = Counter("warpzip_fallback_jobs", "Jobs re-run on the cpu because the device failed.",
                                registry=r)
        self.heap_in_use = Gauge("warpzip_sva_heap_in_use_bytes", "SVA heap bytes in buffers handed out.",
                                 registry=r, multiprocess_mode="livesum")
        self.heap_capacity = Gauge("warpzip_sva_heap_capacity_bytes", "SVA heap size, over all workers.",
                                   registry=r, multiprocess_mode="livesum")
        self.pool = Counter("warpzip_sva_pool_allocations", "Buffer allocations by pool result.", ["result"],
                            registry=r)
        self.device_up = Gauge("warpzip_device_up", "1 while every worker reaches the accelerator, else 0.",
                               registry=r, multiprocess_mode="livemin")
        info = Gauge("warpzip_build_info", "Build information; the value is always 1.", ["version"], registry=r,
                     multiprocess_mode="max")
        info.labels(version=__version__).set(1)
        self._synced: dict[tuple[str, str], int] = {}
        self._runtime = runtime
        self._admission = admission
        self.registry = CollectorRegistry() if self.shared else r
        assert self.registry is not None
        if self.shared:
            multiprocess.MultiProcessCollector(self.registry)
        self.registry.register(AcceleratorCollector(cdev.DevicePaths(root, DEVICE_NAME)))

    def observe_bytes(self, direction: str, consumed: int, produced: int) -> None:
        self.input_bytes.labels(direction).inc(consumed)
        self.output_bytes.labels(direction).inc(produced)

    def render(self) -> bytes:
        self.sync()  # this worker's own figures are current; the others' are at most a second old
        return generate_latest(self.registry)

    def sync(self) -> None:
        """Copy the worker's runtime statistics into the shared instruments."""
        admission = self._admission
        self.admission_pending.set(admission.pending)
        self.admission_limit.set(admission.limit)
        self._advance(self.admission_rejected, ("rejected", ""), admission.rejected)
        runtime = self._runtime()
        if runtime is None:
            return
        stats = runtime.statistics()
        for d in stats.drivers:
            self._runtime_gauges["warpzip_queue_sq_depth"].labels(d.name).set(d.sq_depth)
            self._runtime_gauges["warpzip_queue_sq_capacity"].labels(d.name).set(d.sq_capacity)
            for name, value in (("warpzip_queue_jobs_submitted", d.submitted),
                                ("warpzip_queue_jobs_completed", d.completed),
                                ("warpzip_queue_jobs_failed", d.failed), ("warpzip_queue_doorbells", d.doorbells)):
                self._advance(self._runtime_counters[name].labels(d.name), (name, d.name), value)
        self._advance(self.fallback, ("fallback", ""), stats.fallback_jobs)
        heap = stats.heap
        self.heap_in_use.set(heap.in_use_bytes)
        self.heap_capacity.set(heap.capacity_bytes)
        for result, value in (("hit", heap.hits), ("miss", heap.misses), ("exhausted", heap.exhausted)):
            self._advance(self.pool.labels(result), ("pool", result), value)
        self.device_up.set(int(runtime.zip is not None and runtime.zip.alive))

    def _advance(self, counter: Counter, key: tuple[str, str], value: int) -> None:
        delta = value - self._synced.get(key, 0)
        if delta > 0:
            counter.inc(delta)
            self._synced[key] = value

    async def sync_forever(self) -> None:
        while True:
            self.sync()
            await asyncio.sleep(SYNC_INTERVAL)

    def middleware(self) -> Callable[..., Awaitable[web.StreamResponse]]:
        """Count and time every request. Label children are cached: ``labels()`` costs
        microseconds per call, which at tens of thousands of requests a second shows."""
        counters: dict[tuple[str, str, int], Counter] = {}
        timers: dict[str, Histogram] = {}

        @web.middleware
        async def observe(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                          ) -> web.StreamResponse:
            resource = request.match_info.route.resource
            name = resource.canonical if resource is not None else "unmatched"
            start = time.perf_counter()
            self.in_flight.inc()
            status = 500
            try:
                response = await handler(request)
                status = response.status
                return response
            except asyncio.CancelledError:
                status = CLIENT_CLOSED
                raise
            finally:
                self.in_flight.dec()
                timer = timers.get(name)
                if timer is None:
                    timer = timers[name] = self.latency.labels(name)
                timer.observe(time.perf_counter() - start)
                key = (name, request.method, status)
                counter = counters.get(key)
                if counter is None:
                    counter = counters[key] = self.requests.labels(name, request.method, str(status))
                counter.inc()

        return observe


@final
class AcceleratorCollector(Collector):
    """Reads the device's DFX file on every scrape (device-wide, so any worker may report it)."""

    def __init__(self, paths: cdev.DevicePaths) -> None:
        self.paths = paths

    def collect(self) -> Iterator[Metric]:
        try:
            dfx = Dfx(self.paths.dfx, 0, 0, create=False)
        except (OSError, ValueError):
            return
        try:
            yield from self._device(dfx)
        finally:
            dfx.close()

    def _device(self, dfx: Dfx) -> Iterator[Metric]:
        yield GaugeMetricFamily("warpzip_device_isolated", "1 while the device is isolated.",
                                value=int(dfx.dev[Dev.ISOLATED]))
        yield CounterMetricFamily("warpzip_device_hw_errors", "Hardware errors the device counted.",
                                  value=int(dfx.dev[Dev.HW_ERRORS]))
        try:
            available = int((self.paths.sysfs / "available_instances").read_text())
            yield GaugeMetricFamily("warpzip_device_available_instances", "Free hardware queues.", value=available)
        except (OSError, ValueError):
            pass
        per_queue = {
            Queue.SUBMITTED: ("warpzip_device_jobs_fetched", "SQEs fetched by the engines."),
            Queue.BYTES_IN: ("warpzip_device_input_bytes", "Bytes the engines consumed."),
            Queue.BYTES_OUT: ("warpzip_device_output_bytes", "Bytes the engines produced."),
            Queue.BATCHES: ("warpzip_device_batches", "Engine turns on a queue (SQEs fetched together)."),
            Queue.DOORBELLS: ("warpzip_device_doorbells", "Doorbell kicks the device received."),
            Queue.INTERRUPTS: ("warpzip_device_interrupts", "Completion interrupts raised."),
            Queue.IOPF: ("warpzip_device_iopf", "I/O page faults taken by jobs of the queue."),
        }
        families = {col: CounterMetricFamily(name, text, labels=["queue"]) for col, (name, text) in per_queue.items()}
        jobs = CounterMetricFamily("warpzip_device_jobs_completed", "Jobs completed, by status.",
                                   labels=["queue", "status"])
        state = GaugeMetricFamily("warpzip_device_queue_state", "uacce queue state: 0 zombie/free, 1 init, 2 started.",
                                  labels=["queue"])
        pending = GaugeMetricFamily("warpzip_device_sq_pending", "Doorbelled SQEs not yet fetched.", labels=["queue"])
        for qid in range(dfx.queues):
            row = dfx.queue(qid)
            if not int(row[Queue.SUBMITTED]) and not int(row[Queue.STATE]):
                continue  # never used: keep the series count bounded by queues in use
            q = str(qid)
            for col, family in families.items():
                family.add_metric([q], int(row[col]))
            jobs.add_metric([q, "ok"], int(row[Queue.COMPLETED_OK]))
            jobs.add_metric([q, "error"], int(row[Queue.COMPLETED_ERR]))
            state.add_metric([q], int(row[Queue.STATE]))
            pending.add_metric([q], int(row[Queue.SQ_PENDING]))
        yield from families.values()
        yield from (jobs, state, pending)
        busy = CounterMetricFamily("warpzip_device_engine_busy_seconds", "Time engines spent on jobs.",
                                   labels=["engine"])
        for eid in range(dfx.engines):
            busy.add_metric([str(eid)], int(dfx.engine(eid)[Engine.BUSY_NS]) / 1e9)
        yield busy
        yield from self._faults(dfx)

    def _faults(self, dfx: Dfx) -> Iterator[Metric]:
        f = dfx.faults
        pages = CounterMetricFamily("warpzip_iopf_pages", "Pages the I/O page-fault handler serviced, by result.",
                                    labels=["result"])
        pages.add_metric(["success"], int(f[FaultCounter.PAGES_OK]))
        pages.add_metric(["invalid"], int(f[FaultCounter.PAGES_INVALID]))
        yield pages
        buckets: list[tuple[str, float]] = []
        cumulative = 0
        for i, bound in enumerate(SERVICE_BUCKETS):
            cumulative += int(f[FaultCounter.HIST0 + i])
            buckets.append((repr(bound), cumulative))
        cumulative += int(f[FaultCounter.HIST0 + len(SERVICE_BUCKETS)])
        buckets.append(("+Inf", cumulative))
        yield HistogramMetricFamily("warpzip_iopf_service_seconds",
                                    "Time from posting a page request to its response.", buckets=buckets,
                                    sum_value=int(f[FaultCounter.SERVICE_NS]) / 1e9)

