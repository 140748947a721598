"""Prometheus metrics: RED for the HTTP API, USE for the accelerator.

HTTP metrics are ordinary client objects updated by the middleware. Everything about the device
is read at scrape time — the device's DFX counters from its shared file, this worker's queues and
heap from ``Runtime.statistics()`` — by a custom collector, so the hot path pays nothing for them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Final, final

from aiohttp import web
from prometheus_client import CollectorRegistry, disable_created_metrics, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from app import __version__
from warp import Runtime, cdev
from warp.dfx import Dev, Dfx, Engine, Queue
from warp.iommu.fault import SERVICE_BUCKETS, FaultCounter

LATENCY_BUCKETS: Final = (1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0,
                          2.5, 5.0, 10.0)
DEVICE_NAME: Final = "warp_zip-0"
#: The code recorded when the client disconnects before its answer (nginx's convention).
CLIENT_CLOSED: Final = 499

disable_created_metrics()  # *_created series double the exposition and no dashboard uses them


@final
class Metrics:
    """This worker's registry and the HTTP instruments."""

    def __init__(self, runtime: Callable[[], Runtime | None], root: Path) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("warpzip_http_requests", "HTTP requests answered, by route, method and status code.",
                                ["route", "method", "code"], registry=r)
        self.latency = Histogram("warpzip_http_request_duration_seconds",
                                 "Time from request start to the last response byte handed to the transport.",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("warpzip_http_requests_in_flight", "HTTP requests being handled.", registry=r)
        self.input_bytes = Counter("warpzip_compressor_input_bytes",
                                   "Bytes given to the compressor or decompressor.", registry=r)
        self.output_bytes = Counter("warpzip_compressor_output_bytes",
                                    "Bytes the compressor or decompressor produced.", registry=r)
        info = Gauge("warpzip_build_info", "Build information; the value is always 1.", ["version"], registry=r)
        info.labels(version=__version__).set(1)
        r.register(AcceleratorCollector(runtime, cdev.DevicePaths(root, DEVICE_NAME)))

    def observe_bytes(self, consumed: int, produced: int) -> None:
        self.input_bytes.inc(consumed)
        self.output_bytes.inc(produced)

    def render(self) -> bytes:
        return generate_latest(self.registry)

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
    """Reads the device's DFX file and this worker's runtime on every scrape."""

    def __init__(self, runtime: Callable[[], Runtime | None], paths: cdev.DevicePaths) -> None:
        self.runtime = runtime
        self.paths = paths

    def collect(self) -> Iterator[Metric]:
        runtime = self.runtime()
        if runtime is not None:
            yield from self._runtime(runtime)
        try:
            dfx = Dfx(self.paths.dfx, 0, 0, create=False)
        except (OSError, ValueError):
            return
        try:
            yield from self._device(dfx)
        finally:
            dfx.close()

    def _runtime(self, runtime: Runtime) -> Iterator[Metric]:
        stats = runtime.statistics()
        depth = GaugeMetricFamily("warpzip_queue_sq_depth", "Jobs in this worker's submission queues.",
                                  labels=["driver"])
        capacity = GaugeMetricFamily("warpzip_queue_sq_capacity", "Slots in this worker's submission queues.",
                                     labels=["driver"])
        submitted = CounterMetricFamily("warpzip_queue_jobs_submitted", "Jobs this worker submitted.",
                                        labels=["driver"])
        completed = CounterMetricFamily("warpzip_queue_jobs_completed", "Jobs completed for this worker.",
                                        labels=["driver"])
        failed = CounterMetricFamily("warpzip_queue_jobs_failed", "Jobs completed with an error status.",
                                     labels=["driver"])
        doorbells = CounterMetricFamily("warpzip_queue_doorbells", "SQ doorbells this worker rang.",
                                        labels=["driver"])
        for d in stats.drivers:
            depth.add_metric([d.name], d.sq_depth)
            capacity.add_metric([d.name], d.sq_capacity)
            submitted.add_metric([d.name], d.submitted)
            completed.add_metric([d.name], d.completed)
            failed.add_metric([d.name], d.failed)
            doorbells.add_metric([d.name], d.doorbells)
        yield from (depth, capacity, submitted, completed, failed, doorbells)
        yield CounterMetricFamily("warpzip_fallback_jobs", "Jobs re-run on the cpu because the device failed.",
                                  value=stats.fallback_jobs)
        heap = stats.heap
        yield GaugeMetricFamily("warpzip_sva_heap_in_use_bytes", "SVA heap bytes in buffers handed out.",
                                value=heap.in_use_bytes)
        yield GaugeMetricFamily("warpzip_sva_heap_capacity_bytes", "SVA heap size.", value=heap.capacity_bytes)
        pool = CounterMetricFamily("warpzip_sva_pool_allocations", "Buffer allocations by pool result.",
                                   labels=["result"])
        pool.add_metric(["hit"], heap.hits)
        pool.add_metric(["miss"], heap.misses)
        pool.add_metric(["exhausted"], heap.exhausted)
        yield pool

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

