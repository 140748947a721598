#!/usr/bin/env python3
"""Render the key Grafana panels to PNG from a real Prometheus, for readers without Grafana.

    .venv/bin/python grafana/render.py                 # ~2 min; writes docs/img/warpzip-*.png
    .venv/bin/python grafana/render.py --phase-seconds 5 --out /tmp/img   # a quick look

Grafana cannot be installed everywhere, but Prometheus and wrk can. So this script starts what a
deployment runs — ``warpzip serve`` (embedded device) and a Prometheus with a temp copy of
grafana/prometheus.yml scraping it every second (:mod:`grafana.services`) — drives four phases
of wrk load (4 KiB bodies at 8 connections, 64 KiB at 32, a mix of compress, decompress and
corrupt decompress bodies that are answered 400, then the mix while hardware errors, I/O page
fault storms, a hang and a crash are injected into the device; :mod:`grafana.load`), and then asks
Prometheus for the *dashboards' own* PromQL (read from the generated grafana/dashboards/*.json,
variables substituted as Grafana would; :mod:`grafana.panels`, :mod:`grafana.promql`) as
``query_range`` over the load window, annotations included. Each chosen panel becomes a subplot
titled like the panel, with the panel's unit on the y axis and the colours its overrides give
(:mod:`grafana.plot`, :mod:`grafana.colours`), so the pictures show what the dashboards show and go
stale only when the queries do.

Every process started here is stopped by its PID in a ``finally`` block.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:  # run as a script, grafana/ is sys.path[0]; bench and grafana live at the root
    sys.path.insert(0, str(REPO))

from grafana import plot  # noqa: E402
from grafana.load import JOB_TIMEOUT, Window, drive_load  # noqa: E402
from grafana.panels import Json, iter_panels, load_dashboards  # noqa: E402
from grafana.promql import PAD_SECONDS, annotation_marks, panel_series  # noqa: E402
from grafana.services import SCRAPE_SECONDS, start_prometheus, start_server  # noqa: E402
from warp.device.launch import stop_process  # noqa: E402

OUT = REPO / "docs" / "img"

KEY_PANELS: dict[str, tuple[int, ...]] = {
    # load: request rate by route/code, latency p50/p90/p99, compressor throughput, SQ depth vs
    # capacity; faults: fallback jobs and queue resets, worker jobs (failed) by driver
    "warpzip-overview": (1, 3, 5, 7, 9, 10),
    # load: jobs completed by status, engine busy ratio; faults: job errors by reason, hardware
    # error rate, IOPF pages by result, IOPF service time
    "warpzip-accelerator": (5, 11, 17, 4, 13, 15),
}
"""Dashboard uid → ids of the panels to draw. Ids, not titles: build.py promises ids never change."""

LOG_Y = {("warpzip-overview", 7)}
"""Panels drawn on a symlog y axis (title says so): the zip capacity (1023 slots a queue) would flatten
the depth and the cpu capacity to the x axis, and a still picture cannot be zoomed like Grafana."""


def render(dashboard: Json, ids: Sequence[int], base: str, window: Window, out: Path) -> Path:
    """The chosen panels of one dashboard, their series queried from Prometheus, drawn to a PNG."""
    panels = {panel["id"]: panel for panel in iter_panels(dashboard)}
    missing = [pid for pid in ids if pid not in panels]
    if missing:
        raise KeyError(f"{dashboard['uid']} has no panel {missing}; update KEY_PANELS")
    drawn = [(panels[pid], panel_series(base, panels[pid], window), (dashboard["uid"], pid) in LOG_Y)
             for pid in ids]
    return plot.draw_dashboard(dashboard, drawn, window, out, annotation_marks(base, dashboard, window))


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--phase-seconds", type=int, default=20, help="seconds of each wrk phase")
    parser.add_argument("--out", type=Path, default=OUT, help="directory for the PNGs (default docs/img)")
    args = parser.parse_args(argv)
    dashboards = load_dashboards()
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="warpzip-render-") as directory:
        tmp = Path(directory)
        try:
            root = tmp / "root"
            url = start_server(tmp, root, procs, "--job-timeout", JOB_TIMEOUT)
            prometheus = start_prometheus(tmp, url.removeprefix("http://"), procs)
            print(f"server {url}, prometheus {prometheus}; {args.phase_seconds} s a load phase", flush=True)
            window = drive_load(tmp, url, root, args.phase_seconds, procs)
            time.sleep(PAD_SECONDS + 2 * SCRAPE_SECONDS)  # the idle tail, scraped
            for uid, ids in KEY_PANELS.items():
                print(f"wrote {render(dashboards[uid], ids, prometheus, window, args.out)}", flush=True)
        finally:
            for proc in reversed(procs):  # wrk, then prometheus, then the server and its device
                stop_process(proc, 15.0)  # the server needs the TERM to stop its device
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
