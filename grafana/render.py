#!/usr/bin/env python3
"""Render the key Grafana panels to PNG from a real Prometheus, for readers without Grafana.

    .venv/bin/python grafana/render.py                 # ~80 s; writes docs/img/warpzip-*.png
    .venv/bin/python grafana/render.py --phase-seconds 5 --out /tmp/img   # a quick look

Grafana cannot be installed everywhere, but Prometheus and wrk can. So this script starts what a
deployment runs — ``warpzip serve`` (embedded device) and a Prometheus with a temp copy of
grafana/prometheus.yml scraping it every second — drives three phases of wrk load (4 KiB bodies at
8 connections, 64 KiB at 32, then a mix of compress, decompress and corrupt decompress bodies that
are answered 400), and then asks Prometheus for the *dashboards' own* PromQL (read from the
generated grafana/dashboards/*.json, variables substituted as Grafana would) as ``query_range``
over the load window. Each chosen panel becomes a subplot titled like the panel, with the panel's
unit on the y axis, so the pictures show what the dashboards show and go stale only when the
queries do.

Every process started here is stopped by its PID in a ``finally`` block. The panel helpers
(:func:`iter_panels`, :func:`substitute`, :func:`legend`) are small and standalone on purpose:
tests/observability could import them instead of keeping their own copies.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:  # run as a script, grafana/ is sys.path[0]; bench lives at the root
    sys.path.insert(0, str(REPO))

from bench.bodies import Profile, Slice, materialise  # noqa: E402
from warp.tool.corpus import CORPUS_DIR  # noqa: E402
from warp.device.launch import stop_process, wait_until  # noqa: E402

Json = dict[str, Any]

DASHBOARDS = HERE / "dashboards"
OUT = REPO / "docs" / "img"

VARIABLES = {"job": "warpzip", "instance": ".*", "__rate_interval": "5s"}
"""What Grafana would send with job=warpzip, instance=All and a 1 s scrape interval on a short range."""

KEY_PANELS: dict[str, tuple[int, ...]] = {
    # request rate by route/code, latency p50/p90/p99, compressor throughput, SQ depth vs capacity
    "warpzip-overview": (1, 3, 5, 7),
    # jobs completed by status, jobs per batch, engine busy ratio, IOPF pages by result
    "warpzip-accelerator": (5, 8, 11, 13),
}
"""Dashboard uid → ids of the panels to draw. Ids, not titles: build.py promises ids never change."""

LOG_Y = {("warpzip-overview", 7)}
"""Panels drawn on a symlog y axis (title says so): the zip capacity (1023 slots a queue) would flatten
the depth and the cpu capacity to the x axis, and a still picture cannot be zoomed like Grafana."""

SCRAPE_SECONDS = 1
PAD_SECONDS = 5  # drawn before and after the load, so the graphs start and end at idle
STEP_SECONDS = 1

# -- Grafana's look (dark theme, classic palette) ------------------------------------------------

BACKGROUND = "#111217"
PANEL = "#181b1f"
TEXT = "#ccccdc"
GRID = "#2c3235"
PALETTE = ("#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9", "#705da0",
           "#37872d", "#fade2a", "#447ebc", "#c15c17")

UNIT_LABELS = {"reqps": "requests/s", "ops": "per second", "Bps": "bytes/s", "s": "seconds",
               "percentunit": "percent", "short": "count", "none": "ratio"}
"""Grafana unit id → the y axis label. The tick labels carry the scaled unit (ms, MB/s, %)."""

# -- load ----------------------------------------------------------------------------------------

LUA = """\
-- POSTs the bodies listed in WARPZIP_REQUESTS ("<path> <file>" per line) round-robin.
local requests = {}
local next_index = 0

function init(args)
  -- Host is set only just before init(), so the requests are formatted here, once per thread
  for path, file in string.gmatch(os.getenv("WARPZIP_REQUESTS"), "(%S+) ([^\\n]+)") do
    local f = assert(io.open(file, "rb"))
    local body = f:read("*a")
    f:close()
    requests[#requests + 1] = wrk.format("POST", path, {["Content-Type"] = "application/octet-stream"}, body)
  end
end

function request()
  next_index = next_index % #requests + 1
  return requests[next_index]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("requests=%d non2xx=%d errors=%d\\n", summary.requests, e.status,
                         e.connect + e.read + e.write + e.timeout))
end
"""

KIB = 1024
SMALL = (Slice("dickens", 4 * KIB), Slice("xml", 4 * KIB), Slice("mr", 4 * KIB))
LARGE = (Slice("dickens", 64 * KIB), Slice("x-ray", 64 * KIB), Slice("xml", 64 * KIB))
COMPRESS = "/compress?level=3"
DECOMPRESS = "/decompress"


@dataclass(frozen=True)
class Phase:
    """One wrk run: a name for the figure caption, its connections and its (path, body file) list."""

    name: str
    connections: int
    requests: tuple[tuple[str, Path], ...]


@dataclass(frozen=True)
class Window:
    """The load's wall-clock span and where each phase began, for the query range and the markers."""

    start: float
    end: float
    phases: tuple[tuple[str, float], ...]


# -- processes -----------------------------------------------------------------------------------


def free_port() -> int:
    """A loopback port nobody listens on now (the Debian package may run a Prometheus on :9090)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(tmp: Path, procs: list[subprocess.Popen[bytes]]) -> str:
    """``warpzip serve`` as deployed (embedded device, no access log); returns its base URL."""
    port = free_port()
    log = tmp / "server.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port", str(port),
                                 "--root", str(tmp / "root"), "--access-log", "0"],
                                stdout=sink, stderr=subprocess.STDOUT, cwd=REPO)
    procs.append(proc)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with urllib.request.urlopen(url + "/healthz", timeout=1) as response:
            return bool(response.status == 200)

    wait_until("the server", healthy, 30, log)
    return url


def prometheus_config(tmp: Path, target: str) -> Path:
    """grafana/prometheus.yml scraping ``target`` every second.

    The rule files are dropped: the panels do not read alert state, and relative rule paths would
    not resolve from the temp directory.
    """
    config = yaml.safe_load((HERE / "prometheus.yml").read_text())
    config["global"].update(scrape_interval=f"{SCRAPE_SECONDS}s", scrape_timeout=f"{SCRAPE_SECONDS}s",
                            evaluation_interval=f"{SCRAPE_SECONDS}s")
    config.pop("rule_files", None)
    [job] = config["scrape_configs"]
    [static] = job["static_configs"]
    static["targets"] = [target]
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start_prometheus(tmp: Path, target: str, procs: list[subprocess.Popen[bytes]]) -> str:
    """A real Prometheus with its TSDB in ``tmp``; returns its base URL once it has scraped twice."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp / "prometheus.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(["prometheus", f"--config.file={prometheus_config(tmp, target)}",
                                 f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=sink, stderr=subprocess.STDOUT, cwd=tmp)
    procs.append(proc)

    def scraped() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"prometheus exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        reply = api(base, "/api/v1/query", query='count_over_time(up{job="warpzip"}[1m])')
        result = reply["data"]["result"]
        return bool(result and float(result[0]["value"][1]) >= 2)

    wait_until("prometheus to scrape the server", scraped, 30, log)
    return base


def api(base: str, path: str, **params: str) -> Json:
    """One Prometheus HTTP API call; a non-success reply is an error, not an empty graph."""
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as response:
        reply: Json = json.loads(response.read())
    if reply.get("status") != "success":
        raise RuntimeError(f"{path} {params}: {reply}")
    return reply


def compress_via(url: str, body: bytes) -> bytes:
    """A valid zstd frame for the decompress requests, made by the service under test itself."""
    request = urllib.request.Request(url + COMPRESS, data=body, method="POST",
                                     headers={"Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return bytes(response.read())


def phases(tmp: Path, url: str) -> list[Phase]:
    """The three load phases over Silesia slices; the mix's corrupt body is raw text sent to
    /decompress, which the service answers 400 corrupt-frame (1 request in 8)."""
    bodies = tmp / "bodies"
    bodies.mkdir()
    materialise([Profile("render", SMALL + LARGE)], bodies, CORPUS_DIR)
    small = [bodies / piece.filename for piece in SMALL]
    large = [bodies / piece.filename for piece in LARGE]
    frames = []
    for source in (small[0], large[0]):
        frame = bodies / f"{source.stem}.zst"
        frame.write_bytes(compress_via(url, source.read_bytes()))
        frames.append(frame)
    mix = ((COMPRESS, small[1]), (COMPRESS, large[1]), (DECOMPRESS, frames[0]), (COMPRESS, small[2]),
           (COMPRESS, large[2]), (DECOMPRESS, frames[1]), (COMPRESS, small[0]), (DECOMPRESS, small[0]))
    return [
        Phase("4 KiB compress, 8 conns", 8, tuple((COMPRESS, path) for path in small)),
        Phase("64 KiB compress, 32 conns", 32, tuple((COMPRESS, path) for path in large)),
        Phase("mix + corrupt decompress, 16 conns", 16, mix),
    ]


def run_wrk(script: Path, url: str, phase: Phase, seconds: int, procs: list[subprocess.Popen[bytes]]) -> str:
    """One wrk phase; returns its summary line. The Popen is registered first so an interrupt
    still stops it by PID."""
    env = dict(os.environ, WARPZIP_REQUESTS="\n".join(f"{path} {body}" for path, body in phase.requests))
    proc = subprocess.Popen(["wrk", "-t1", f"-c{phase.connections}", f"-d{seconds}s", "--timeout", "10s",
                             "-s", str(script), url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    procs.append(proc)
    output, _ = proc.communicate(timeout=seconds + 30)
    text = output.decode(errors="replace")
    summary = next((line for line in text.splitlines() if line.startswith("requests=")), None)
    if proc.returncode != 0 or summary is None or summary.startswith("requests=0 "):
        raise RuntimeError(f"wrk failed in phase {phase.name!r}:\n{text}")
    return summary


def drive_load(tmp: Path, url: str, seconds: int, procs: list[subprocess.Popen[bytes]]) -> Window:
    """Runs the phases back to back and returns their wall-clock window."""
    script = tmp / "requests.lua"
    script.write_text(LUA)
    marks = []
    start = time.time()
    for phase in phases(tmp, url):
        marks.append((phase.name, time.time()))
        print(f"  {phase.name}: {run_wrk(script, url, phase, seconds, procs)}", flush=True)
    return Window(start, time.time(), tuple(marks))


# -- panels and queries --------------------------------------------------------------------------


def load_dashboards(directory: Path = DASHBOARDS) -> dict[str, Json]:
    """The generated dashboards by uid (the JSON is what Grafana loads, so it is what we draw)."""
    dashboards = (json.loads(path.read_text()) for path in sorted(directory.glob("*.json")))
    return {dashboard["uid"]: dashboard for dashboard in dashboards}


def iter_panels(dashboard: Json) -> Iterator[Json]:
    """Every panel, including panels nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def substitute(expr: str, variables: dict[str, str] = VARIABLES) -> str:
    """The PromQL Grafana sends: ``$name`` and ``${name}`` replaced; a leftover ``$`` is a bug."""
    for name in sorted(variables, key=len, reverse=True):  # longest first: $__rate_interval before $job
        expr = expr.replace("${" + name + "}", variables[name]).replace("$" + name, variables[name])
    if "$" in expr:
        raise ValueError(f"unsubstituted variable in {expr}")
    return expr


def legend(template: str, labels: dict[str, str]) -> str:
    """Grafana's legendFormat: ``{{label}}`` replaced by the series' label value."""
    text = template
    for name, value in labels.items():
        text = text.replace("{{" + name + "}}", value)
    return text.strip() or json.dumps(labels)


def query_range(base: str, expr: str, window: Window) -> list[Json]:
    """The matrix Grafana would draw over the load window (padded), one point per second."""
    reply = api(base, "/api/v1/query_range", query=expr, start=f"{window.start - PAD_SECONDS:.3f}",
                end=f"{window.end + PAD_SECONDS:.3f}", step=str(STEP_SECONDS))
    return list(reply["data"]["result"])


@dataclass(frozen=True)
class Series:
    """One line of a panel, its values on the window's one-second grid (NaN where there was no sample)."""

    label: str
    values: list[float]


def grid(window: Window) -> list[float]:
    """The query_range timestamps: Prometheus evaluates at start + k * step exactly."""
    first = window.start - PAD_SECONDS
    count = int((window.end + PAD_SECONDS - first) // STEP_SECONDS) + 1
    return [first + k * STEP_SECONDS for k in range(count)]


def panel_series(base: str, panel: Json, window: Window) -> list[Series]:
    """Every series of every target of the panel, legends formatted, on the shared grid so that
    stacking is a plain sum and gaps stay gaps (the panels do not span nulls)."""
    first, size = window.start - PAD_SECONDS, len(grid(window))
    found = []
    for target in panel["targets"]:
        for result in query_range(base, substitute(target["expr"]), window):
            values = [math.nan] * size
            for stamp, value in result["values"]:
                values[round((float(stamp) - first) / STEP_SECONDS)] = float(value)
            found.append(Series(legend(target.get("legendFormat", ""), result["metric"]), values))
    return found


# -- drawing -------------------------------------------------------------------------------------


def scaled(value: float, unit: str) -> str:
    """A tick label in the panel's unit, scaled the way Grafana scales it (ms, MB/s, k, %)."""
    if not math.isfinite(value):
        return ""
    if unit == "percentunit":
        return f"{value * 100:.0f}%"
    if unit == "s":
        for factor, suffix in ((1, "s"), (1e-3, "ms"), (1e-6, "µs")):
            if abs(value) >= factor or factor == 1e-6:
                return f"{value / factor:.3g} {suffix}" if value else "0"
    suffix = {"Bps": "B/s", "reqps": " req/s", "ops": " ops/s"}.get(unit, "")
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{suffix.strip()}"
    return f"{value:.3g}{suffix}" if unit != "Bps" else f"{value:.3g} B/s"


def style(axes: Any) -> None:
    """Grafana's dark panel: dark background, faint grid, muted text, no box."""
    axes.set_facecolor(PANEL)
    axes.grid(True, color=GRID, linewidth=0.6)
    axes.tick_params(colors=TEXT, labelsize=8)
    for side in axes.spines.values():
        side.set_visible(False)


def draw_panel(axes: Any, panel: Json, series: Sequence[Series], window: Window, log_y: bool = False) -> None:
    """One panel: lines with Grafana's 10 % fill (stacked when the panel stacks), unit on the y axis,
    dotted markers where each load phase starts."""
    import numpy as np
    from matplotlib.ticker import FuncFormatter

    style(axes)
    defaults = panel["fieldConfig"]["defaults"]
    unit = defaults["unit"]
    stacked = defaults.get("custom", {}).get("stacking", {}).get("mode") == "normal"
    times = np.array(grid(window)) - window.start
    below = np.zeros(len(times))
    ordered = sorted(series, key=lambda s: s.label)
    for index, item in enumerate(ordered):
        color = PALETTE[index % len(PALETTE)]
        layer = len(ordered) - index if stacked else 2  # a stack's near-zero top layers must not hide the edge below
        values = np.array(item.values)
        lower = below if stacked else np.zeros(len(times))
        if stacked:  # Grafana stacks a missing sample as 0
            values = below + np.nan_to_num(values)
            below = values
        axes.plot(times, values, color=color, linewidth=1.2, label=item.label, zorder=layer)
        axes.fill_between(times, lower, values, color=color, alpha=0.1, linewidth=0, zorder=1)
    for _, started in window.phases[1:]:
        axes.axvline(started - window.start, color=TEXT, alpha=0.35, linestyle=":", linewidth=0.8)
    if log_y:
        axes.set_yscale("symlog", linthresh=1)
    if defaults.get("min") is not None:
        axes.set_ylim(bottom=defaults["min"])
    if defaults.get("max") is not None:
        axes.set_ylim(top=defaults["max"])
    axes.set_xlim(-PAD_SECONDS, window.end - window.start + PAD_SECONDS)
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: scaled(value, unit)))
    axes.set_ylabel(UNIT_LABELS.get(unit, unit), color=TEXT, fontsize=8)
    axes.set_xlabel("seconds since the load started", color=TEXT, fontsize=8)
    title = panel["title"] + (" (log y axis)" if log_y else "")
    axes.set_title(title, color=TEXT, fontsize=10, loc="left", fontweight="bold")
    if not series:
        axes.text(0.5, 0.5, "No data", color=TEXT, ha="center", va="center", transform=axes.transAxes)
        return
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=4, fontsize=7, frameon=False,
                labelcolor=TEXT, handlelength=1.2)


def render(dashboard: Json, ids: Sequence[int], base: str, window: Window, out: Path) -> Path:
    """A 2-column grid of the chosen panels, the dashboard's title on top, the phases in the caption."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    panels = {panel["id"]: panel for panel in iter_panels(dashboard)}
    missing = [pid for pid in ids if pid not in panels]
    if missing:
        raise KeyError(f"{dashboard['uid']} has no panel {missing}; update KEY_PANELS")
    rows = math.ceil(len(ids) / 2)
    figure, grid = plt.subplots(rows, 2, figsize=(14, 4.4 * rows), squeeze=False, constrained_layout=True)
    figure.set_facecolor(BACKGROUND)
    for axes, pid in zip(grid.flat, ids, strict=False):
        draw_panel(axes, panels[pid], panel_series(base, panels[pid], window), window,
                   log_y=(dashboard["uid"], pid) in LOG_Y)
    for axes in list(grid.flat)[len(ids):]:
        axes.set_visible(False)
    phases_text = "  |  ".join(f"{round(started - window.start)} s: {name}" for name, started in window.phases)
    figure.suptitle(f"{dashboard['title']}  —  {phases_text}", color=TEXT, fontsize=11, x=0.01, ha="left")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{dashboard['uid']}.png"
    figure.savefig(path, dpi=100, facecolor=BACKGROUND)
    plt.close(figure)
    return path


# -- main ----------------------------------------------------------------------------------------


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase-seconds", type=int, default=20, help="seconds of each of the three wrk phases")
    parser.add_argument("--out", type=Path, default=OUT, help="directory for the PNGs (default docs/img)")
    args = parser.parse_args(argv)
    dashboards = load_dashboards()
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="warpzip-render-") as directory:
        tmp = Path(directory)
        try:
            url = start_server(tmp, procs)
            prometheus = start_prometheus(tmp, url.removeprefix("http://"), procs)
            print(f"server {url}, prometheus {prometheus}; load {3 * args.phase_seconds} s", flush=True)
            window = drive_load(tmp, url, args.phase_seconds, procs)
            time.sleep(PAD_SECONDS + 2 * SCRAPE_SECONDS)  # the idle tail, scraped
            for uid, ids in KEY_PANELS.items():
                print(f"wrote {render(dashboards[uid], ids, prometheus, window, args.out)}", flush=True)
        finally:
            for proc in reversed(procs):  # wrk, then prometheus, then the server and its device
                stop_process(proc, 15.0)  # the server needs the TERM to stop its device
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
