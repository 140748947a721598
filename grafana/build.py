#!/usr/bin/env python3
"""Generate the warpzip Grafana dashboards.

    python grafana/build.py           # (re)write grafana/dashboards/*.json
    python grafana/build.py --check   # exit 1 if a committed file differs from what this script produces

The JSON files are build output: edit this script, run it, commit both. Every panel comes from
:func:`panel`, which enforces the house rules (a unit and a description on every panel, the
``${datasource}`` variable, ``$__rate_interval`` in every range, explicit and therefore stable ids).
Standard library only.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "dashboards"

SCHEMA_VERSION = 39
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"
# every query is scoped by the job and instance variables; instance is multi-valued ("All" = .*)
SCOPE = 'job="$job", instance=~"$instance"'
WIDTH = 24  # Grafana's grid width

MEANING = (
    (r"(.* 2\d\d|ok|success|hit|completed .*)", "green"),
    (r".* 4\d\d", "orange"),
    (r"(.* 5\d\d|5xx ratio|error|invalid|exhausted|failed .*|fallback|queue resets|hw errors|errors in .*)", "red"),
)
"""Legend regexes (Grafana's byRegexp: a plain pattern must match the whole name) → the colour their
series are drawn in, so that ok is green and errors red on every panel instead of whatever the
palette hands out in legend order. Later rules win, as Grafana applies overrides in order. Each
matching series gets its own shade ("shades of a colour"), so two error codes stay apart."""

RESTARTS = (
    ("Worker restarts", "warpzip_worker_restarts_total", "orange", "a worker process exited and was replaced"),
    ("Device restarts", "warpzip_device_restarts_total", "red", "the embedded device exited and was restarted"),
    ("Queue resets", "warpzip_queue_resets_total", "purple",
     "a job outlived --job-timeout: the worker reset its queues and re-ran their jobs on the cpu"),
)
"""(name, counter, icon colour, text) of the events marked on every graph: the moments a reader
looking at a dip or an error burst wants to see."""

Json = dict[str, Any]


COMPRESS = 'direction="compress"'


def sel(metric: str, extra: str = "") -> str:
    """``metric{job="$job", instance=~"$instance", <extra>}``."""
    return f"{metric}{{{SCOPE}{', ' + extra if extra else ''}}}"


def rate(metric: str, extra: str = "") -> str:
    return f"rate({sel(metric, extra)}[{RATE}])"


def quantile(q: float, bucket: str, by: str = "", extra: str = "") -> str:
    keys = ", ".join(k for k in ("le", by) if k)
    return f"histogram_quantile({q}, sum by ({keys}) ({rate(bucket, extra)}))"


def shades(color: str) -> Json:
    """Grafana's "shades of a colour" mode: every series of the override its own shade of ``color``."""
    return {"mode": "shades", "fixedColor": color}


def meaning_overrides() -> list[Json]:
    return [{"matcher": {"id": "byRegexp", "options": regex}, "properties": [{"id": "color", "value": shades(color)}]}
            for regex, color in MEANING]


def target(expr: str, legend: str, ref: str) -> Json:
    return {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "range": True, "refId": ref}


class Layout:
    """Places panels left to right, wrapping at the grid width, rows as tall as their tallest panel."""

    def __init__(self) -> None:
        self.x = self.y = self.row_h = 0

    def place(self, w: int, h: int) -> Json:
        if self.x + w > WIDTH:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        pos = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.row_h = max(self.row_h, h)
        return pos


def panel(layout: Layout, pid: int, title: str, description: str, unit: str,
          queries: Iterable[tuple[str, str]], *, kind: str = "timeseries", w: int = 12, h: int = 8,
          mappings: list[Json] | None = None, thresholds: list[Json] | None = None, stack: bool = False,
          decimals: int | None = None, minimum: float | None = 0, maximum: float | None = None,
          color: Json | None = None) -> Json:
    """One panel. ``queries`` are (PromQL, legend) pairs; ``pid`` is the panel's permanent id.
    A time series panel is coloured by :data:`MEANING` (``color`` replaces its classic palette)."""
    targets = [target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(queries)]
    assert targets and unit and description, title
    for t in targets:  # every range in a dashboard query is $__rate_interval
        assert all(r == RATE for r in re.findall(r"\[([^\]]*)\]", t["expr"])), t["expr"]
    defaults: Json = {
        "unit": unit,
        "thresholds": {"mode": "absolute",
                       "steps": thresholds or [{"color": "green", "value": None}]},
        "mappings": mappings or [],
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    if minimum is not None:
        defaults["min"] = minimum
    if maximum is not None:
        defaults["max"] = maximum
    options: Json
    overrides: list[Json] = []
    if kind == "timeseries":
        defaults["color"] = color or {"mode": "palette-classic"}
        overrides = meaning_overrides()
        defaults["custom"] = {
            "drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never",
            "spanNulls": False, "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        }
        options = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                   "tooltip": {"mode": "multi", "sort": "desc"}}
    elif kind == "stat":
        defaults["color"] = {"mode": "thresholds"}
        options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                   "colorMode": "background", "graphMode": "area", "justifyMode": "auto",
                   "orientation": "auto", "textMode": "auto"}
    elif kind == "state-timeline":
        defaults["color"] = {"mode": "thresholds"}
        defaults["custom"] = {"fillOpacity": 70, "lineWidth": 0}
        options = {"showValue": "auto", "mergeValues": True, "rowHeight": 0.9, "alignValue": "left",
                   "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                   "tooltip": {"mode": "single", "sort": "none"}}
    else:
        raise ValueError(kind)
    return {
        "id": pid,
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": layout.place(w, h),
        "fieldConfig": {"defaults": defaults, "overrides": overrides},
        "options": options,
        "targets": targets,
    }


def value_map(*pairs: tuple[int, str, str]) -> list[Json]:
    options = {str(v): {"text": text, "color": color, "index": i} for i, (v, text, color) in enumerate(pairs)}
    return [{"type": "value", "options": options}]


def step(color: str, value: float | None = None) -> Json:
    return {"color": color, "value": value}


def templating() -> Json:
    return {"list": [
        {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
         "current": {"selected": False, "text": "Prometheus", "value": "warpzip-prometheus"},
         "hide": 0, "includeAll": False, "multi": False, "options": [], "refresh": 1, "regex": "",
         "skipUrlSync": False},
        {"name": "job", "label": "Job", "type": "query", "datasource": DATASOURCE,
         "definition": "label_values(warpzip_build_info, job)",
         "query": {"query": "label_values(warpzip_build_info, job)", "refId": "PrometheusVariableQueryEditor-job"},
         "current": {"selected": False, "text": "warpzip", "value": "warpzip"},
         "hide": 0, "includeAll": False, "multi": False, "options": [], "refresh": 2, "regex": "",
         "skipUrlSync": False, "sort": 1},
        {"name": "instance", "label": "Instance", "type": "query", "datasource": DATASOURCE,
         "definition": 'label_values(warpzip_build_info{job="$job"}, instance)',
         "query": {"query": 'label_values(warpzip_build_info{job="$job"}, instance)',
                   "refId": "PrometheusVariableQueryEditor-instance"},
         "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
         "hide": 0, "includeAll": True, "allValue": ".*", "multi": True, "options": [], "refresh": 2,
         "regex": "", "skipUrlSync": False, "sort": 1},
    ]}


def restart_annotation(name: str, metric: str, color: str, text: str) -> Json:
    """A Prometheus annotation: a mark on every graph wherever ``metric`` (a counter) changed."""
    return {"name": name, "datasource": DATASOURCE, "enable": True, "hide": False, "iconColor": color,
            "expr": f"changes({sel(metric)}[{RATE}]) > 0", "titleFormat": name,
            "textFormat": "{{instance}}: " + text, "tagKeys": "instance", "useValueForTime": False}


def dashboard(uid: str, title: str, description: str, panels: list[Json]) -> Json:
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel id in {uid}"
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["warpzip"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "liveNow": False,
        "refresh": "10s",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": "now-30m", "to": "now"},
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "weekStart": "",
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
            "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard"},
            *(restart_annotation(*event) for event in RESTARTS)]},
        "links": [{"type": "dashboards", "tags": ["warpzip"], "asDropdown": False, "includeVars": True,
                   "keepTime": True, "title": "warpzip", "icon": "external link", "targetBlank": False,
                   "tooltip": "", "url": ""}],
        "templating": templating(),
        "panels": panels,
    }


def overview() -> Json:
    L = Layout()
    req = "warpzip_http_requests_total"
    lat = "warpzip_http_request_duration_seconds_bucket"
    io_routes = 'route=~"/compress|/decompress"'
    five = 'code=~"5.."'
    ok, not_ok = 'outcome="ok"', 'outcome!="ok"'
    panels = [
        panel(L, 1, "Request rate by route and code",
              "Requests per second answered by the service, by aiohttp route and HTTP status code "
              "(warpzip_http_requests_total). Unmatched paths are route=\"unmatched\".",
              "reqps", [(f"sum by (route, code) ({rate(req)})", "{{route}} {{code}}")], stack=True),
        panel(L, 2, "5xx ratio",
              "Share of requests answered with a 5xx status (503 = load shed or out of SVA memory). "
              "0 when there are requests and none failed; no data when there is no traffic at all.",
              "percentunit",
              [(f"(sum({rate(req, five)}) or vector(0)) / sum({rate(req)})", "5xx ratio")],
              thresholds=[step("green"), step("orange", 0.01), step("red", 0.05)], maximum=None),
        panel(L, 3, "Latency p50 / p90 / p99 (compress, decompress)",
              "Quantiles of the time from request start to the last response byte handed to the transport, "
              "per route, from the warpzip_http_request_duration_seconds histogram summed over instances.",
              "s", [(quantile(q, lat, "route", io_routes), f"p{round(q * 100)} {{{{route}}}}")
                    for q in (0.5, 0.9, 0.99)]),
        panel(L, 4, "Requests in flight",
              "Requests being handled right now, per instance (warpzip_http_requests_in_flight, sampled at scrape).",
              "short", [(f"sum by (instance) ({sel('warpzip_http_requests_in_flight')})", "{{instance}}")]),
        panel(L, 5, "Compressor throughput",
              "Bytes per second given to and produced by the compressor/decompressor, by direction "
              "(warpzip_compressor_input_bytes_total / _output_bytes_total).",
              "Bps", [(f"sum by (direction) ({rate('warpzip_compressor_input_bytes_total')})", "in {{direction}}"),
                      (f"sum by (direction) ({rate('warpzip_compressor_output_bytes_total')})",
                       "out {{direction}}")]),
        panel(L, 6, "Compression ratio",
              "Input bytes / output bytes of compression (direction=\"compress\") over the rate interval.",
              "none", [(f"sum({rate('warpzip_compressor_input_bytes_total', COMPRESS)}) / "
                        f"sum({rate('warpzip_compressor_output_bytes_total', COMPRESS)})",
                        "in / out")], decimals=2),
        panel(L, 7, "Submission queue depth vs capacity",
              "Jobs in this service's submission queues against the slots they have, by driver "
              "(zip = accelerator queues, cpu = fallback thread pool; for cpu, capacity is its thread count).",
              "short", [(f"sum by (driver) ({sel('warpzip_queue_sq_depth')})", "depth {{driver}}"),
                        (f"sum by (driver) ({sel('warpzip_queue_sq_capacity')})", "capacity {{driver}}")]),
        panel(L, 8, "Submission queue utilisation",
              "SQ depth / capacity by driver; the WarpzipQueueSaturated alert fires when zip stays above 90 %.",
              "percentunit", [(f"sum by (driver) ({sel('warpzip_queue_sq_depth')}) / "
                               f"sum by (driver) ({sel('warpzip_queue_sq_capacity')})", "{{driver}}")],
              thresholds=[step("green"), step("orange", 0.7), step("red", 0.9)]),
        panel(L, 9, "Fallback jobs and queue resets",
              "Jobs per second re-run on the cpu driver because the device failed them "
              "(warpzip_fallback_jobs_total), and queue resets per second after a job outlived "
              "--job-timeout (warpzip_queue_resets_total). Both 0 with a healthy device.",
              "ops", [(f"sum({rate('warpzip_fallback_jobs_total')})", "fallback"),
                      (f"sum({rate('warpzip_queue_resets_total')})", "queue resets")],
              thresholds=[step("green"), step("red", 0.001)]),
        panel(L, 10, "Worker jobs by driver",
              "Jobs per second this service submitted, completed and failed, by driver "
              "(warpzip_queue_jobs_*_total).",
              "ops", [(f"sum by (driver) ({rate('warpzip_queue_jobs_submitted_total')})", "submitted {{driver}}"),
                      (f"sum by (driver) ({rate('warpzip_queue_jobs_completed_total')})", "completed {{driver}}"),
                      (f"sum by (driver) ({rate('warpzip_queue_jobs_failed_total')})", "failed {{driver}}")]),
        panel(L, 11, "SVA heap in use vs capacity",
              "Bytes of the SVA heap in buffers handed out against the heap size, per instance. A full heap "
              "makes requests fail with 503.",
              "bytes", [(f"sum by (instance) ({sel('warpzip_sva_heap_in_use_bytes')})", "in use {{instance}}"),
                        (f"sum by (instance) ({sel('warpzip_sva_heap_capacity_bytes')})", "capacity {{instance}}")]),
        panel(L, 12, "SVA buffer pool allocations",
              "Buffer allocations per second by pool result: hit (reused a prefaulted buffer), miss (carved "
              "a new block from the heap), exhausted (no memory left: the request gets 503).",
              "ops", [(f"sum by (result) ({rate('warpzip_sva_pool_allocations_total')})", "{{result}}")]),
        panel(L, 13, "Streams in flight and how they end",
              "Streamed requests (bodies over --stream-above) in progress by direction "
              "(warpzip_streams_in_flight), and streams ended per second by outcome (warpzip_streams_total): "
              "ok; refused = a problem document before the response head; cut = failed after it, the "
              "connection closed before the last chunk; client_closed.",
              "short", [(f"sum by (direction) ({sel('warpzip_streams_in_flight')})", "in flight {{direction}}"),
                        (f"sum by (outcome) ({rate('warpzip_streams_total', ok)})", "ok"),
                        (f"sum by (outcome) ({rate('warpzip_streams_total', not_ok)})",
                         "error {{outcome}}")]),
        panel(L, 14, "Stream throughput",
              "Bytes per second the streams take from their uploads and send back, by direction, counted "
              "block by block while a stream runs (warpzip_stream_input_bytes_total / _output_bytes_total); "
              "whole-body requests are in Compressor throughput.",
              "Bps", [(f"sum by (direction) ({rate('warpzip_stream_input_bytes_total')})", "in {{direction}}"),
                      (f"sum by (direction) ({rate('warpzip_stream_output_bytes_total')})", "out {{direction}}")]),
    ]
    return dashboard("warpzip-overview", "warpzip / Overview",
                     "RED metrics of the HTTP API and saturation of the queues and SVA heap.", panels)


def accelerator() -> Json:
    L = Layout()
    bucket = "warpzip_iopf_service_seconds_bucket"
    panels = [
        # device health first: the questions asked during an incident
        panel(L, 1, "Device isolated",
              "1 while the device has isolated itself after too many hardware errors (its queues stopped, "
              "discovery skips it until reset); 0 when healthy. Alert: WarpzipDeviceIsolated.",
              "none", [(f"max({sel('warpzip_device_isolated')})", "isolated")], kind="stat", w=6, h=5,
              mappings=value_map((0, "OK", "green"), (1, "ISOLATED", "red")),
              thresholds=[step("green"), step("red", 1)]),
        panel(L, 2, "Hardware errors",
              "Hardware errors the device counted since it started (warpzip_device_hw_errors_total). Above "
              "isolate_strategy errors per hour the device isolates itself.",
              "short", [(f"max({sel('warpzip_device_hw_errors_total')})", "errors")], kind="stat", w=6, h=5,
              thresholds=[step("green"), step("orange", 1)]),
        panel(L, 3, "Available instances",
              "Free hardware queues on the device (sysfs available_instances). 0 means a new worker or "
              "session gets EBUSY and runs on the cpu driver.",
              "short", [(f"min({sel('warpzip_device_available_instances')})", "available")], kind="stat",
              w=6, h=5, thresholds=[step("red"), step("orange", 1), step("green", 4)]),
        panel(L, 4, "Hardware error rate",
              "Hardware errors per second (rate of warpzip_device_hw_errors_total).",
              "ops", [(f"sum({rate('warpzip_device_hw_errors_total')})", "hw errors")], w=6, h=5,
              thresholds=[step("green"), step("red", 0.001)]),
        # queues
        panel(L, 5, "Device jobs completed by status",
              "Jobs the device completed per second, by status (ok / error), summed over its queues.",
              "ops", [(f"sum by (status) ({rate('warpzip_device_jobs_completed_total')})", "{{status}}")],
              stack=True),
        panel(L, 6, "Doorbells and interrupts",
              "Doorbell kicks the device received and completion interrupts it raised, per second. Fewer "
              "than jobs means batching (doorbell) and interrupt moderation are working.",
              "ops", [(f"sum({rate('warpzip_device_doorbells_total')})", "doorbells"),
                      (f"sum({rate('warpzip_device_interrupts_total')})", "interrupts"),
                      (f"sum({rate('warpzip_device_jobs_fetched_total')})", "jobs fetched")]),
        panel(L, 7, "Engine batches",
              "Engine turns on a queue per second (warpzip_device_batches_total): each turn fetches the SQEs "
              "doorbelled since the last one.",
              "ops", [(f"sum by (queue) ({rate('warpzip_device_batches_total')})", "queue {{queue}}")]),
        panel(L, 8, "Jobs per batch",
              "Average SQEs fetched per engine turn: rate(jobs_fetched) / rate(batches). Higher is better "
              "amortisation of doorbells and interrupts.",
              "none", [(f"sum({rate('warpzip_device_jobs_fetched_total')}) / "
                        f"sum({rate('warpzip_device_batches_total')})", "jobs / batch")], decimals=2),
        panel(L, 9, "SQ pending (doorbelled, not fetched)",
              "SQEs that were doorbelled but not yet fetched by an engine, per queue. Growth means the "
              "engines are the bottleneck.",
              "short", [(f"sum by (queue) ({sel('warpzip_device_sq_pending')})", "queue {{queue}}")]),
        panel(L, 10, "Queue state",
              "uacce state of every queue that has been used: 0 free/zombie, 1 init, 2 started.",
              "none", [(f"max by (queue) ({sel('warpzip_device_queue_state')})", "queue {{queue}}")],
              kind="state-timeline",
              mappings=value_map((0, "free/zombie", "text"), (1, "init", "orange"), (2, "started", "green"))),
        # engines
        panel(L, 11, "Engine busy ratio",
              "Fraction of wall time each engine spent on jobs: rate(warpzip_device_engine_busy_seconds_total). "
              "Near 100 % means the device is saturated.",
              "percentunit", [(rate("warpzip_device_engine_busy_seconds_total"), "{{instance}} engine {{engine}}")],
              thresholds=[step("green"), step("orange", 0.8), step("red", 0.95)]),
        panel(L, 12, "Engine throughput",
              "Bytes per second the engines consumed and produced (warpzip_device_input/output_bytes_total).",
              "Bps", [(f"sum({rate('warpzip_device_input_bytes_total')})", "in"),
                      (f"sum({rate('warpzip_device_output_bytes_total')})", "out")]),
        # IOPF
        panel(L, 13, "I/O page faults by result",
              "Pages per second the I/O page-fault handler serviced, by result: success (page made present) "
              "or invalid (address outside every mapping: the job fails). Near 0 in steady state because "
              "pooled buffers are prefaulted. Alert: WarpzipIopfRateHigh.",
              "ops", [(f"sum by (result) ({rate('warpzip_iopf_pages_total')})", "{{result}}")]),
        panel(L, 14, "I/O page faults by queue",
              "Page faults per second taken by jobs of each queue (warpzip_device_iopf_total).",
              "ops", [(f"sum by (queue) ({rate('warpzip_device_iopf_total')})", "queue {{queue}}")]),
        panel(L, 15, "IOPF service time p50 / p90 / p99",
              "Quantiles of the time from posting a page request to its response "
              "(warpzip_iopf_service_seconds). Empty (NaN) while no faults are taken.",
              "s", [(quantile(q, bucket), f"p{round(q * 100)}") for q in (0.5, 0.9, 0.99)]),
        panel(L, 16, "IOPF mean service time",
              "Mean time to service one page request: rate(_sum) / rate(_count). NaN while no faults.",
              "s", [(f"sum({rate('warpzip_iopf_service_seconds_sum')}) / "
                     f"sum({rate('warpzip_iopf_service_seconds_count')})", "mean")]),
        # errors and isolation
        panel(L, 17, "Device job errors by reason",
              "Jobs the device completed with an error, per second, by reason: addr_fault (I/O page fault "
              "answered INVALID), hw_error, dst_too_small, corrupt_input, bad_sqe, queue_stopped (left "
              "without a completion when a stop could not drain a hung engine and the controller reset). The "
              "library re-runs hw_error jobs and those of a stop that failed on the cpu.",
              "ops", [(f"sum by (reason) ({rate('warpzip_device_job_errors_total')})", "{{reason}}")],
              stack=True, color=shades("red")),
        panel(L, 18, "Hardware errors in the last hour vs isolate_strategy",
              "Hardware errors counted in the sliding hour (warpzip_device_hw_errors_window) against the "
              "threshold in force (warpzip_device_isolate_strategy; 0 = never isolate). Above it the device "
              "isolates itself.",
              "short", [(f"max({sel('warpzip_device_hw_errors_window')})", "errors in the last hour"),
                        (f"max({sel('warpzip_device_isolate_strategy')})", "isolate_strategy")]),
        # streams
        panel(L, 19, "Stream context memory",
              "What the stream contexts the engines hold were charged (zstd's estimate of each: ~3.5 MiB at "
              "level 3, ~90 MiB at 19) against --stream-memory, and streams refused per second because theirs "
              "did not fit (the client got 503 stream-memory-full).",
              "bytes", [(f"max({sel('warpzip_device_stream_memory_bytes')})", "charged"),
                        (f"max({sel('warpzip_device_stream_memory_limit_bytes')})", "--stream-memory")]),
        panel(L, 20, "Streams refused",
              "Stream first BDs refused NO_CTX_MEMORY per second (warpzip_device_stream_refusals_total).",
              "ops", [(f"sum({rate('warpzip_device_stream_refusals_total')})", "refused")],
              thresholds=[step("green"), step("orange", 0.001)]),
    ]
    return dashboard("warpzip-accelerator", "warpzip / Accelerator",
                     "USE metrics of the simulated uacce device: queues, engines, I/O page faults, health.", panels)


DASHBOARDS = {"warpzip-overview.json": overview, "warpzip-accelerator.json": accelerator}


def render() -> dict[str, str]:
    """File name → the exact text this script writes."""
    return {name: json.dumps(make(), indent=2) + "\n" for name, make in DASHBOARDS.items()}


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name, text in render().items():
        path = OUT / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            OUT.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(HERE.parent)}")
    if stale:
        print(f"out of date (run python grafana/build.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
