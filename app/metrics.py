"""Prometheus metrics: RED for the HTTP API, USE for the accelerator.

With several worker processes a scrape reaches whichever worker the kernel picks, yet must report
totals over all of them, with counters that never go backwards. Each worker accumulates its
figures in a :class:`~app.stats.WorkerStats` (cheap enough for the request path) and writes a
snapshot to its own file in a directory that ``serve`` shares with the workers, once a second and
before it answers a scrape; a scrape merges every worker's file (:func:`app.stats.merge`).
The device's DFX counters are device-wide and are read at scrape time from the shared DFX file by
:class:`AcceleratorCollector`.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Final, final

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from app import __version__
from app.admission import Admission
from app.stats import LATENCY_BUCKETS, SPECS, Merged, WorkerStats, merge
from warp import Runtime, cdev
from warp.dfx import Dev, Dfx, Engine, Queue
from warp.iommu.fault import SERVICE_BUCKETS, FaultCounter

DEVICE_NAME: Final = "warp_zip-0"
#: The code recorded when the client disconnects before its answer (nginx's convention).
CLIENT_CLOSED: Final = 499
SHARED_DIR_ENV: Final = "WARPZIP_METRICS_DIR"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Guard = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]
SYNC_INTERVAL: Final = 1.0
#: DFX error breakdown by reason (label value, column); queue_stopped = flushed by PUT_Q or close.
ERROR_REASONS: Final = (("addr_fault", Queue.ERR_ADDR_FAULT), ("hw_error", Queue.ERR_HW),
                        ("dst_too_small", Queue.ERR_DST_TOO_SMALL), ("corrupt_input", Queue.ERR_CORRUPT_INPUT),
                        ("bad_sqe", Queue.ERR_BAD_SQE), ("queue_stopped", Queue.FLUSHED))


@final
class Metrics:
    """This worker's figures, their snapshot file, and the registry a scrape renders."""

    def __init__(self, runtime: Callable[[], Runtime | None], admission: Admission, root: Path) -> None:
        self.stats = WorkerStats()
        self.stats.set("warpzip_build_info", (__version__,), 1)
        self._in_flight = self.stats.values["warpzip_http_requests_in_flight"]
        self._runtime = runtime
        self._admission = admission
        shared = os.environ.get(SHARED_DIR_ENV)
        self.directory = Path(shared) if shared else None
        self.registry = CollectorRegistry()
        self.registry.register(WorkerCollector(self))
        self.registry.register(AcceleratorCollector(cdev.DevicePaths(root, DEVICE_NAME)))

    def observe_bytes(self, direction: str, consumed: int, produced: int) -> None:
        self.stats.add("warpzip_compressor_input_bytes", (direction,), consumed)
        self.stats.add("warpzip_compressor_output_bytes", (direction,), produced)

    def observe_job(self, driver: str, seconds: float) -> None:
        self.stats.observe("warpzip_queue_job_duration_seconds", (driver,), seconds)

    def render(self) -> bytes:
        self.sync()  # this worker's own figures are current; the others' are at most a second old
        return generate_latest(self.registry)

    def sync(self) -> None:
        """Copy the runtime's statistics in and publish this worker's snapshot."""
        st = self.stats
        admission = self._admission
        st.set("warpzip_admission_pending", (), admission.pending)
        st.set("warpzip_admission_limit", (), admission.limit)
        st.set("warpzip_admission_rejected", (), admission.rejected)
        runtime = self._runtime()
        if runtime is not None:
            stats = runtime.statistics()
            for d in stats.drivers:
                key = (d.name,)
                st.set("warpzip_queue_sq_depth", key, d.sq_depth)
                st.set("warpzip_queue_sq_capacity", key, d.sq_capacity)
                st.set("warpzip_queue_jobs_submitted", key, d.submitted)
                st.set("warpzip_queue_jobs_completed", key, d.completed)
                st.set("warpzip_queue_jobs_failed", key, d.failed)
                st.set("warpzip_queue_doorbells", key, d.doorbells)
            st.set("warpzip_fallback_jobs", (), stats.fallback_jobs)
            st.set("warpzip_queue_resets", (), stats.queue_resets)
            st.set("warpzip_sva_heap_in_use_bytes", (), stats.heap.in_use_bytes)
            st.set("warpzip_sva_heap_capacity_bytes", (), stats.heap.capacity_bytes)
            for result, value in (("hit", stats.heap.hits), ("miss", stats.heap.misses),
                                  ("exhausted", stats.heap.exhausted)):
                st.set("warpzip_sva_pool_allocations", (result,), value)
            st.set("warpzip_device_up", (), int(runtime.zip is not None and runtime.zip.alive))
        if self.directory is not None:
            target = self.directory / f"worker-{os.getpid()}.json"
            tmp = target.with_suffix(".tmp")
            tmp.write_text(json.dumps(st.snapshot(os.getpid())))
            os.replace(tmp, target)

    def merged(self) -> Merged:
        """Every worker's figures combined (just this worker's without a shared directory)."""
        if self.directory is None:
            return merge([self.stats.snapshot(os.getpid())], {os.getpid()})
        snapshots: list[dict[str, Any]] = []
        for path in self.directory.glob("worker-*.json"):
            try:
                snapshots.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue  # a worker is replacing its file right now; it is at most a second old
        return merge(snapshots, {s["pid"] for s in snapshots if _alive(s["pid"])})

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
        st = self.stats
        st.observe("warpzip_http_request_duration_seconds", (route,), time.perf_counter() - start)
        st.add("warpzip_http_requests", (route, method, str(status)))

    def count_refused(self, status: int) -> None:
        """A request the connection answered itself (bad or slow head, too many connections):
        no route was chosen and the method may be unreadable, so both labels read ``-``."""
        self.stats.add("warpzip_http_requests", ("-", "-", str(status)))


def use_shared_directory(path: Path) -> None:
    """Workers started from now on (this process included) publish their snapshots under ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("worker-*"):
        stale.unlink()
    os.environ[SHARED_DIR_ENV] = str(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
        yield GaugeMetricFamily("warpzip_device_hw_errors_window",
                                "Hardware errors in the last hour, as isolation counts them.",
                                value=int(dfx.dev[Dev.HW_ERRORS_WINDOW]))
        yield GaugeMetricFamily("warpzip_device_isolate_strategy",
                                "isolate_strategy in force: errors per hour tolerated (0 = never isolate).",
                                value=int(dfx.dev[Dev.ISOLATE_STRATEGY]))
        yield CounterMetricFamily("warpzip_device_resets", "Controller resets.", value=int(dfx.dev[Dev.RESETS]))
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
        errors = CounterMetricFamily("warpzip_device_job_errors", "Jobs completed with an error, by reason.",
                                     labels=["queue", "reason"])
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
            for reason, col in ERROR_REASONS:
                errors.add_metric([q, reason], int(row[col]))
            state.add_metric([q], int(row[Queue.STATE]))
            pending.add_metric([q], int(row[Queue.SQ_PENDING]))
        yield from families.values()
        yield from (jobs, errors, state, pending)
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

