"""Prometheus metrics: RED for the HTTP API, USE for the accelerator.

This worker counts its requests and copies its runtime's statistics into a :class:`~app.tally.Tally`
(cheap enough for the request path), publishes it to the shared snapshot files
(:mod:`app.snapshot_files`), and a scrape renders every worker's figures merged, with the device's
DFX counters (:mod:`app.dfx_collector`).
"""

from __future__ import annotations

import asyncio
import platform
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Final, final

import aiohttp
import zstandard
from aiohttp import web
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from app import __version__
from app.admission import Admission
from app.dfx_collector import AcceleratorCollector
from app.dictionaries import WorkerDictionaries
from app.snapshot_files import SnapshotFiles
from app.tally import LATENCY_BUCKETS, SPECS, Merged, Tally
from warp import Runtime, cdev

DEVICE_NAME: Final = "warp_zip-0"
#: The code recorded when the client disconnects before its answer (nginx's convention).
CLIENT_CLOSED: Final = 499
STREAM_DIRECTIONS: Final = ("compress", "decompress")
STREAM_OUTCOMES: Final = ("ok", "refused", "cut", "client_closed")
"""How a stream ends (:mod:`app.api.streams`): answered; a problem before its head; failed after it; the client left."""
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Guard = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]
SYNC_INTERVAL: Final = 1.0
PROCESS_SERIES: Final = frozenset({"process_cpu_seconds", "process_resident_memory_bytes", "process_open_fds",
                                   "process_start_time_seconds"})
BUILD: Final = (__version__, platform.python_version(), aiohttp.__version__, ".".join(map(str, zstandard.ZSTD_VERSION)))


@final
class Metrics:
    """This worker's figures, their snapshot file, and the registry a scrape renders."""

    def __init__(self, runtime: Callable[[], Runtime | None], admission: Admission, root: Path,
                 device: str = "embedded") -> None:
        self.tally = Tally()
        self.tally.set("warpzip_build_info", (*BUILD, device), 1)  # device: the alerts tell "none" from an outage
        self._in_flight = self.tally.values["warpzip_http_requests_in_flight"]
        for direction in STREAM_DIRECTIONS:  # every stream series from the start: rates and alerts need a 0
            for name in ("warpzip_streams_in_flight", "warpzip_stream_input_bytes", "warpzip_stream_output_bytes"):
                self.tally.set(name, (direction,), 0)
            for outcome in STREAM_OUTCOMES:
                self.tally.set("warpzip_streams", (direction, outcome), 0)
        self._runtime = runtime
        self._admission = admission
        self.files = SnapshotFiles()
        self._process = ProcessCollector(registry=None)
        self.registry = CollectorRegistry()
        self.registry.register(WorkerCollector(self))
        self.registry.register(AcceleratorCollector(cdev.DevicePaths(root, DEVICE_NAME)))
        #: Set with the runtime (app.server): the dictionaries this worker uses.
        self.dictionaries: WorkerDictionaries | None = None

    def observe_bytes(self, direction: str, consumed: int, produced: int) -> None:
        self.tally.add("warpzip_compressor_input_bytes", (direction,), consumed)
        self.tally.add("warpzip_compressor_output_bytes", (direction,), produced)

    def stream_begin(self, direction: str) -> None:
        self.tally.add("warpzip_streams_in_flight", (direction,))

    def stream_bytes(self, direction: str, consumed: int, produced: int) -> None:
        """A stream's progress, as it goes: a stream of hours shows on the dashboard before it ends."""
        self.tally.add("warpzip_stream_input_bytes", (direction,), consumed)
        self.tally.add("warpzip_stream_output_bytes", (direction,), produced)

    def stream_end(self, direction: str, outcome: str) -> None:
        self.tally.add("warpzip_streams_in_flight", (direction,), -1)
        self.tally.add("warpzip_streams", (direction, outcome))

    def observe_job(self, driver: str, seconds: float) -> None:
        self.tally.observe("warpzip_queue_job_duration_seconds", (driver,), seconds)

    def render(self) -> bytes:
        self.sync()  # this worker's own figures are current; the others' are at most a second old
        return generate_latest(self.registry)

    def sync(self) -> None:
        """Copy the admission's and the runtime's statistics in and publish this worker's snapshot."""
        tally = self.tally
        admission = self._admission
        tally.set("warpzip_admission_pending", (), admission.pending)
        tally.set("warpzip_admission_limit", (), admission.limit)
        tally.set("warpzip_admission_rejected", (), admission.rejected)
        runtime = self._runtime()
        if runtime is not None:
            self._copy_runtime(runtime)
        if self.dictionaries is not None:
            self._copy_dictionaries(self.dictionaries)
        self._copy_process()
        self.files.publish(tally)

    def _copy_dictionaries(self, dictionaries: WorkerDictionaries) -> None:
        stats = dictionaries.statistics()
        self.tally.set("warpzip_dictionaries", (), stats.stored)
        for direction, used in stats.used:
            self.tally.set("warpzip_dictionary_requests", (direction,), used)

    def _copy_process(self) -> None:
        """This worker's standard process figures (prometheus-client reads /proc), merged like the rest."""
        for family in self._process.collect():
            if family.name in PROCESS_SERIES:
                self.tally.set(family.name, (), family.samples[0].value)

    def _copy_runtime(self, runtime: Runtime) -> None:
        tally = self.tally
        stats = runtime.statistics()
        for d in stats.drivers:
            key = (d.name,)
            tally.set("warpzip_queue_sq_depth", key, d.sq_depth)
            tally.set("warpzip_queue_sq_capacity", key, d.sq_capacity)
            tally.set("warpzip_queue_jobs_submitted", key, d.submitted)
            tally.set("warpzip_queue_jobs_completed", key, d.completed)
            tally.set("warpzip_queue_jobs_failed", key, d.failed)
            tally.set("warpzip_queue_doorbells", key, d.doorbells)
        tally.set("warpzip_fallback_jobs", (), stats.fallback_jobs)
        tally.set("warpzip_queue_resets", (), stats.queue_resets)
        tally.set("warpzip_sva_heap_in_use_bytes", (), stats.heap.in_use_bytes)
        tally.set("warpzip_sva_heap_capacity_bytes", (), stats.heap.capacity_bytes)
        for result, value in (("hit", stats.heap.hits), ("miss", stats.heap.misses),
                              ("exhausted", stats.heap.exhausted)):
            tally.set("warpzip_sva_pool_allocations", (result,), value)
        device = stats.device
        tally.set("warpzip_device_up", (), int(device is not None and device.alive))

    def merged(self) -> Merged:
        """Every worker's figures combined (just this worker's without a shared directory)."""
        return self.files.merged(self.tally)

    async def sync_forever(self) -> None:
        while True:
            self.sync()
            await asyncio.sleep(SYNC_INTERVAL)

    def instrument(self, route: str, handler: Handler, guard: Guard) -> Handler:
        """``handler`` under ``guard`` (the error mapping), counted and timed as ``route``, so the
        status counted is the one the client gets."""

        async def instrumented(request: web.Request) -> web.StreamResponse:
            start = self.begin()
            status = 500
            try:
                response = await guard(request, handler)
                status = response.status
                return response
            except asyncio.CancelledError:
                status = CLIENT_CLOSED
                raise
            finally:
                self.end(route, request.method, status, start)

        return instrumented

    def begin(self) -> float:
        """A request starts (either front end): it is in flight from now; returns its start time."""
        in_flight = self._in_flight
        in_flight[()] = in_flight.get((), 0) + 1
        return time.perf_counter()

    def end(self, route: str, method: str, status: int, start: float) -> None:
        """The request that :meth:`begin` started was answered with ``status``."""
        self._in_flight[()] -= 1
        tally = self.tally
        tally.observe("warpzip_http_request_duration_seconds", (route,), time.perf_counter() - start)
        tally.add("warpzip_http_requests", (route, method, str(status)))

    def count_refused(self, status: int) -> None:
        """A request the connection answered itself (bad or slow head, too many connections):
        no route was chosen and the method may be unreadable, so both labels read ``-``."""
        self.tally.add("warpzip_http_requests", ("-", "-", str(status)))


@final
class WorkerCollector(Collector):
    """Exposes the merged worker figures as Prometheus families."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        merged = self.metrics.merged()
        for name, spec in SPECS.items():
            family: Metric
            if spec.kind == "histogram":
                hist = HistogramMetricFamily(name, spec.help, labels=spec.labels)
                for labels, counts in merged.histograms.get(name, {}).items():
                    cumulative = 0.0
                    buckets: list[tuple[str, float]] = []
                    for bound, count in zip((*map(repr, LATENCY_BUCKETS), "+Inf"), counts, strict=False):
                        cumulative += count
                        buckets.append((bound, cumulative))
                    hist.add_metric(list(labels), buckets, counts[-1])
                yield hist
                continue
            family = (CounterMetricFamily if spec.kind == "counter" else GaugeMetricFamily)(
                name, spec.help, labels=spec.labels)
            for labels, value in merged.values.get(name, {}).items():
                family.add_metric(list(labels), value)
            yield family
