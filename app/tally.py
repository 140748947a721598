"""Per-worker request and runtime figures (a tally), and their merge across worker processes (sans I/O).

The request path only adds to plain dicts here (well under a microsecond); prometheus-client's
instruments cost several microseconds per update in multiprocess mode, which at tens of thousands
of requests a second was a sixth of the service's CPU. Each worker periodically turns its figures
into a JSON-able snapshot; :func:`merge` sums counters and histograms over every snapshot (a dead
worker's counts stay, so totals never go backwards) and gauges over live workers only.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, final

Kind = Literal["counter", "gauge", "histogram"]
Labels = tuple[str, ...]

LATENCY_BUCKETS: Final = (1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0,
                          2.5, 5.0, 10.0)


@final
@dataclass(frozen=True)
class Spec:
    kind: Kind
    labels: tuple[str, ...]
    help: str
    combine: Literal["sum", "min"] = "sum"  # how live workers' gauges merge


#: Every worker-side series, by name (counters without their ``_total`` suffix).
SPECS: Final[Mapping[str, Spec]] = {
    "warpzip_http_requests": Spec("counter", ("route", "method", "code"),
                                  "HTTP requests answered, by route, method and status code."),
    "warpzip_http_request_duration_seconds": Spec(
        "histogram", ("route",), "Time from request start to the last response byte handed to the transport."),
    "warpzip_http_requests_in_flight": Spec("gauge", (), "HTTP requests being handled."),
    "warpzip_compressor_input_bytes": Spec("counter", ("direction",),
                                           "Bytes given to the compressor or decompressor."),
    "warpzip_compressor_output_bytes": Spec("counter", ("direction",),
                                            "Bytes the compressor or decompressor produced."),
    "warpzip_streams_in_flight": Spec("gauge", ("direction",), "Streamed requests (bodies over the stream "
                                      "threshold) in progress."),
    "warpzip_stream_input_bytes": Spec("counter", ("direction",), "Body bytes the streams handed to the device."),
    "warpzip_stream_output_bytes": Spec("counter", ("direction",), "Bytes the streams produced and sent."),
    "warpzip_streams": Spec("counter", ("direction", "outcome"), "Streams ended, by outcome: ok, refused (a "
                            "problem before the response head), cut (failed after it), client_closed."),
    "warpzip_queue_job_duration_seconds": Spec("histogram", ("driver",),
                                               "Time from handing a job to the driver to its completion."),
    "warpzip_admission_pending": Spec("gauge", (), "Requests admitted and not finished."),
    "warpzip_admission_limit": Spec("gauge", (), "Requests the workers admit before answering 503."),
    "warpzip_admission_rejected": Spec("counter", (), "Requests answered 503 because too many were in progress."),
    "warpzip_queue_sq_depth": Spec("gauge", ("driver",), "Jobs in the workers' submission queues."),
    "warpzip_queue_sq_capacity": Spec("gauge", ("driver",), "Slots in the workers' submission queues."),
    "warpzip_queue_jobs_submitted": Spec("counter", ("driver",), "Jobs the workers submitted."),
    "warpzip_queue_jobs_completed": Spec("counter", ("driver",), "Jobs completed for the workers."),
    "warpzip_queue_jobs_failed": Spec("counter", ("driver",), "Jobs completed with an error status."),
    "warpzip_queue_doorbells": Spec("counter", ("driver",), "SQ doorbells the workers rang."),
    "warpzip_fallback_jobs": Spec("counter", (), "Jobs re-run on the cpu because the device failed."),
    "warpzip_queue_resets": Spec("counter", (), "Times a job outlived --job-timeout and the queues were reset."),
    "warpzip_sva_heap_in_use_bytes": Spec("gauge", (), "SVA heap bytes in buffers handed out."),
    "warpzip_sva_heap_capacity_bytes": Spec("gauge", (), "SVA heap size, over all workers."),
    "warpzip_sva_pool_allocations": Spec("counter", ("result",), "Buffer allocations by pool result."),
    "warpzip_device_up": Spec("gauge", (), "1 while every worker reaches the accelerator, else 0.", "min"),
    "warpzip_build_info": Spec("gauge", ("version", "python", "aiohttp", "zstd", "device"),
                               "Build information: warpzip, Python, aiohttp and libzstd versions, and the "
                               "--device mode (embedded, external, none); always 1.", "min"),
    "warpzip_dictionaries": Spec("gauge", (), "Trained dictionaries in --data-dir (every worker sees the same).",
                                 "min"),
    "warpzip_dictionary_requests": Spec("counter", ("direction",), "Requests that used a trained dictionary."),
    "warpzip_worker_restarts": Spec("counter", (), "Worker processes replaced after they exited."),
    "warpzip_device_restarts": Spec("counter", (), "Times the embedded device was restarted after it exited."),
    # The standard process metrics, over the worker processes: a replaced worker's CPU stays counted.
    "process_cpu_seconds": Spec("counter", (), "Total user and system CPU time of the worker processes, seconds."),
    "process_resident_memory_bytes": Spec("gauge", (), "Resident memory of the live worker processes, bytes."),
    "process_open_fds": Spec("gauge", (), "Open file descriptors of the live worker processes."),
    "process_start_time_seconds": Spec("gauge", (), "Start time of the oldest live worker, seconds since the epoch.",
                                       "min"),
}


@final
class Tally:
    """One worker's figures. Not thread-safe: the event loop is its only writer."""

    def __init__(self) -> None:
        self.values: dict[str, dict[Labels, float]] = {name: {} for name, s in SPECS.items() if s.kind != "histogram"}
        self.histograms: dict[str, dict[Labels, list[float]]] = {
            name: {} for name, s in SPECS.items() if s.kind == "histogram"}

    def add(self, name: str, labels: Labels, amount: float = 1) -> None:
        series = self.values[name]
        series[labels] = series.get(labels, 0) + amount

    def set(self, name: str, labels: Labels, value: float) -> None:
        self.values[name][labels] = value

    def observe(self, name: str, labels: Labels, value: float) -> None:
        """Histogram: bucket counts (last = +Inf) followed by the sum."""
        series = self.histograms[name]
        counts = series.get(labels)
        if counts is None:
            counts = series[labels] = [0.0] * (len(LATENCY_BUCKETS) + 2)
        counts[bisect_left(LATENCY_BUCKETS, value)] += 1
        counts[-1] += value

    def snapshot(self, pid: int) -> dict[str, Any]:
        return {"pid": pid,
                "values": {n: [[list(k), v] for k, v in s.items()] for n, s in self.values.items()},
                "histograms": {n: [[list(k), c] for k, c in s.items()] for n, s in self.histograms.items()}}


@final
@dataclass(frozen=True)
class Merged:
    values: dict[str, dict[Labels, float]]
    histograms: dict[str, dict[Labels, list[float]]]


def merge(snapshots: Iterable[Mapping[str, Any]], live: set[int]) -> Merged:
    """Counters and histograms over every snapshot; gauges over the live workers' snapshots."""
    values: dict[str, dict[Labels, float]] = {}
    histograms: dict[str, dict[Labels, list[float]]] = {}
    for snap in snapshots:
        alive = snap["pid"] in live
        for name, series in snap["values"].items():
            spec = SPECS.get(name)
            if spec is None or (spec.kind == "gauge" and not alive):
                continue
            out = values.setdefault(name, {})
            for labels, value in series:
                key = tuple(labels)
                if key in out and spec.kind == "gauge" and spec.combine == "min":
                    out[key] = min(out[key], value)
                else:
                    out[key] = out.get(key, 0) + value
        for name, series in snap["histograms"].items():
            if name not in SPECS:
                continue
            hout = histograms.setdefault(name, {})
            for labels, counts in series:
                key = tuple(labels)
                acc = hout.setdefault(key, [0.0] * len(counts))
                for i, c in enumerate(counts):
                    acc[i] += c
    return Merged(values, histograms)
