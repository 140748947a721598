"""The accelerator's Prometheus families (USE for the device), from its DFX counters.

The counters are device-wide and live in a file any process maps read-only, so whichever worker a
scrape reaches reads them at scrape time (:func:`warp.dfx.read_snapshot`) — nothing to merge.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final, final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from warp import cdev
from warp.dfx import Dev, DfxSnapshot, Engine, Queue, read_snapshot
from warp.iommu.fault import SERVICE_BUCKETS, FaultCounter

#: DFX error breakdown by reason (label value, column); queue_stopped = left without a CQE by a
#: stop whose drain failed (a hung engine; the library re-runs them).
ERROR_REASONS: Final = (("addr_fault", Queue.ERR_ADDR_FAULT), ("hw_error", Queue.ERR_HW),
                        ("dst_too_small", Queue.ERR_DST_TOO_SMALL), ("corrupt_input", Queue.ERR_CORRUPT_INPUT),
                        ("bad_sqe", Queue.ERR_BAD_SQE), ("queue_stopped", Queue.FLUSHED))
#: AEQ event types (label value, column): a disabled queue (CQ overflow, CQE error) or a function reset.
AEQ_EVENTS: Final = (("cq_overflow", Dev.AEQ_CQ_OVERFLOW), ("eq_overflow", Dev.AEQ_EQ_OVERFLOW),
                     ("cqe_error", Dev.AEQ_CQE_ERROR))
#: Per-queue counters exported as they are: column → (family, help).
PER_QUEUE: Final = {
    Queue.SUBMITTED: ("warpzip_device_jobs_fetched", "SQEs fetched by the engines."),
    Queue.BYTES_IN: ("warpzip_device_input_bytes", "Bytes the engines consumed."),
    Queue.BYTES_OUT: ("warpzip_device_output_bytes", "Bytes the engines produced."),
    Queue.BATCHES: ("warpzip_device_batches", "Engine turns on a queue (SQEs fetched together)."),
    Queue.DOORBELLS: ("warpzip_device_doorbells", "Doorbell kicks the device received."),
    Queue.INTERRUPTS: ("warpzip_device_interrupts", "Completion interrupts raised."),
    Queue.IOPF: ("warpzip_device_iopf", "I/O page faults taken by jobs of the queue."),
}


@final
class AcceleratorCollector(Collector):
    """Reads the device's DFX file on every scrape (device-wide, so any worker may report it)."""

    def __init__(self, paths: cdev.DevicePaths) -> None:
        self.paths = paths

    def collect(self) -> Iterator[Metric]:
        try:
            dfx = read_snapshot(self.paths.dfx)
        except (OSError, ValueError):
            return
        yield from self._device(dfx)
        yield from self._queues(dfx)
        yield self._engines(dfx)
        yield from self._faults(dfx)

    def _device(self, dfx: DfxSnapshot) -> Iterator[Metric]:
        dev = dfx.device
        yield GaugeMetricFamily("warpzip_device_isolated", "1 while the device is isolated.", value=dev[Dev.ISOLATED])
        yield CounterMetricFamily("warpzip_device_hw_errors", "Hardware errors the device counted.",
                                  value=dev[Dev.HW_ERRORS])
        yield GaugeMetricFamily("warpzip_device_hw_errors_window",
                                "Hardware errors in the last hour, as isolation counts them.",
                                value=dev[Dev.HW_ERRORS_WINDOW])
        yield GaugeMetricFamily("warpzip_device_isolate_strategy",
                                "isolate_strategy in force: errors per hour tolerated (0 = never isolate).",
                                value=dev[Dev.ISOLATE_STRATEGY])
        yield CounterMetricFamily("warpzip_device_resets", "Controller resets.", value=dev[Dev.RESETS])
        yield GaugeMetricFamily("warpzip_device_stream_memory_bytes", "What the stream contexts the engines hold "
                                "were charged (zstd's estimates).", value=dev[Dev.STREAM_MEMORY])
        yield GaugeMetricFamily("warpzip_device_stream_memory_limit_bytes", "--stream-memory of the device.",
                                value=dev[Dev.STREAM_MEMORY_LIMIT])
        yield CounterMetricFamily("warpzip_device_stream_refusals", "Streams refused: their context did not fit "
                                  "--stream-memory.", value=dev[Dev.STREAM_REFUSALS])
        aeq = CounterMetricFamily("warpzip_device_aeq_events", "AEQ events the QM driver handled, by type.",
                                  labels=["type"])
        for kind, column in AEQ_EVENTS:
            aeq.add_metric([kind], dev[column])
        yield aeq
        try:
            available = int((self.paths.sysfs / "available_instances").read_text())
            yield GaugeMetricFamily("warpzip_device_available_instances", "Free hardware queues.", value=available)
        except (OSError, ValueError):
            pass

    @staticmethod
    def _queues(dfx: DfxSnapshot) -> Iterator[Metric]:
        families = {col: CounterMetricFamily(name, text, labels=["queue"]) for col, (name, text) in PER_QUEUE.items()}
        jobs = CounterMetricFamily("warpzip_device_jobs_completed", "Jobs completed, by status.",
                                   labels=["queue", "status"])
        errors = CounterMetricFamily("warpzip_device_job_errors", "Jobs completed with an error, by reason.",
                                     labels=["queue", "reason"])
        state = GaugeMetricFamily("warpzip_device_queue_state", "uacce queue state: 0 zombie/free, 1 init, 2 started.",
                                  labels=["queue"])
        pending = GaugeMetricFamily("warpzip_device_sq_pending", "Doorbelled SQEs not yet fetched.", labels=["queue"])
        for qid, row in dfx.queues_in_use():  # the unused stay out: series grow with queues in use
            q = str(qid)
            for col, family in families.items():
                family.add_metric([q], row[col])
            jobs.add_metric([q, "ok"], row[Queue.COMPLETED_OK])
            jobs.add_metric([q, "error"], row[Queue.COMPLETED_ERR])
            for reason, col in ERROR_REASONS:
                errors.add_metric([q, reason], row[col])
            state.add_metric([q], row[Queue.STATE])
            pending.add_metric([q], row[Queue.SQ_PENDING])
        yield from families.values()
        yield from (jobs, errors, state, pending)

    @staticmethod
    def _engines(dfx: DfxSnapshot) -> Metric:
        busy = CounterMetricFamily("warpzip_device_engine_busy_seconds", "Time engines spent on jobs.",
                                   labels=["engine", "pool"])
        for eid, row in enumerate(dfx.engines):
            busy.add_metric([str(eid), "decompress" if row[Engine.POOL] else "compress"], row[Engine.BUSY_NS] / 1e9)
        return busy

    @staticmethod
    def _faults(dfx: DfxSnapshot) -> Iterator[Metric]:
        f = dfx.faults
        pages = CounterMetricFamily("warpzip_iopf_pages", "Pages the I/O page-fault handler serviced, by result.",
                                    labels=["result"])
        pages.add_metric(["success"], f[FaultCounter.PAGES_OK])
        pages.add_metric(["invalid"], f[FaultCounter.PAGES_INVALID])
        yield pages
        buckets: list[tuple[str, float]] = []
        cumulative = 0
        for bound, count in zip((*map(repr, SERVICE_BUCKETS), "+Inf"), dfx.fault_histogram, strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        yield HistogramMetricFamily("warpzip_iopf_service_seconds",
                                    "Time from posting a page request to its response.", buckets=buckets,
                                    sum_value=f[FaultCounter.SERVICE_NS] / 1e9)
