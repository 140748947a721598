"""Memory soak: a real ``warpzip serve`` (two workers and the embedded device) under wrk -c64 for ten
minutes, its processes' RSS sampled all along; it fails when their total grew more than 10% from the
end of the warm-up to the end of the run.

A leak that costs a few bytes a request hides in a benchmark's seconds but not in ten minutes at
thousands of requests a second. The load is the benchmark's ``mixed`` profile (every corpus file at
256 B, 4 KiB and 64 KiB, plus a 1 MiB body), so the SVA size classes, the responses copied out
below 16 KiB and those streamed from the heap above it all turn over. Both ends of the comparison
are medians over a tenth of the measured samples, so one sample taken mid-burst does not decide.
RSS counts pages of the SVA heap in each process that maps them (the worker and the device); the
heap is carved early, which is what the warm-up is for.

The run also fails when a response is wrong (checked before and after the load), wrk sees an
error, or a process of the tree exits (a restarted worker would hide its own leak).

``make soak`` (``SOAK_DURATION=120`` for a shorter run); ``tests/e2e/test_soak_smoke.py`` runs the
same harness for 15 s.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench import proctree, wrk
from bench.bodies import PROFILES, body_paths, materialise
from bench.server import SERVERS, RunningServer, ServerFailed

MIB = 1 << 20
ROLES = ("server", "worker", "device")


@dataclass(frozen=True)
class Settings:
    duration_s: int = 600
    warmup_s: int = 60
    interval_s: float = 5.0
    connections: int = 64
    max_growth: float = 0.10
    server: str = "warpzip-2w"
    level: int = 3


@dataclass(frozen=True)
class Sample:
    """The tree at ``seconds`` after the load started: (pid, start time) → (role, RSS bytes)."""

    seconds: float
    processes: dict[proctree.ProcessKey, tuple[str, int]]

    def rss(self, role: str | None = None) -> int:
        return sum(rss for kind, rss in self.processes.values() if role is None or kind == role)


@dataclass
class Soak:
    settings: Settings
    samples: list[Sample] = field(default_factory=list)
    result: wrk.WrkResult | None = None
    failures: list[str] = field(default_factory=list)

    def growth(self, role: str | None = None) -> tuple[int, int] | None:
        """(RSS just after the warm-up, RSS at the end), each a median over a tenth of the measured
        samples (three at least); ``None`` when the run was too short to have both."""
        measured = [s.rss(role) for s in self.samples if s.seconds >= self.settings.warmup_s]
        window = max(3, len(measured) // 10)
        if len(measured) < 2 * window:
            return None
        return int(statistics.median(measured[:window])), int(statistics.median(measured[-window:]))

    def verdict(self) -> list[str]:
        """Why the soak failed (empty when it passed)."""
        reasons = list(self.failures)
        if self.result is not None and (self.result.non2xx or self.result.errors):
            reasons.append(f"wrk saw {self.result.non2xx} error responses and {self.result.errors} socket errors")
        span = self.growth()
        if span is None:
            reasons.append("too few samples after the warm-up to measure growth")
        elif span[1] > span[0] * (1 + self.settings.max_growth):
            reasons.append(f"RSS grew {span[1] / span[0] - 1:.1%} (limit {self.settings.max_growth:.0%})")
        return reasons


def role(stat: proctree.ProcStat, server_pid: int) -> str:
    """``server`` (the process started; with one worker it is the worker), ``device`` or ``worker``."""
    if stat.pid == server_pid:
        return "server"
    return "device" if proctree.is_device(stat.pid) else "worker"


def sample(server_pid: int, seconds: float) -> Sample:
    return Sample(seconds, {stat.key: (role(stat, server_pid), stat.rss_bytes)
                            for stat in proctree.snapshot_tree(server_pid)})


def run(settings: Settings, scratch: Path, progress: bool = False) -> Soak:
    """One soak against a fresh server in ``scratch``; every process it started is gone on return."""
    soak = Soak(settings)
    profile = PROFILES["mixed"]
    materialise([profile], scratch)
    paths = body_paths(profile, scratch)
    bodies = [path.read_bytes() for path in dict.fromkeys(paths)]
    try:
        with RunningServer(SERVERS[settings.server], scratch) as server, \
                concurrent.futures.ThreadPoolExecutor(1) as pool:
            server.wait_ready()
            server.verify(settings.level, bodies)
            pid = server.process.pid
            load = pool.submit(wrk.run, server.url(settings.level), settings.connections, settings.duration_s, paths)
            started = time.monotonic()
            while True:
                soak.samples.append(sample(pid, time.monotonic() - started))
                server.remember(set(soak.samples[-1].processes))
                if progress:
                    _print_sample(soak.samples[-1])
                if concurrent.futures.wait([load], timeout=settings.interval_s).done:
                    break
            soak.result = load.result()
            server.ensure_alive()
            server.verify(settings.level, bodies)
    except (ServerFailed, RuntimeError, ValueError, subprocess.TimeoutExpired) as error:
        soak.failures.append(str(error))
    keys = [set(s.processes) for s in soak.samples]
    if keys and any(k != keys[0] for k in keys):
        soak.failures.append("the server's processes changed during the run (one exited or was replaced)")
    return soak


def _print_sample(s: Sample) -> None:
    parts = "  ".join(f"{r} {s.rss(r) / MIB:7.1f}" for r in ROLES)
    print(f"{s.seconds:6.0f} s  RSS MiB: total {s.rss() / MIB:7.1f}  {parts}", file=sys.stderr, flush=True)


def render(soak: Soak) -> str:
    """The summary: per role the RSS after the warm-up and at the end, wrk's figures, the verdict."""
    settings = soak.settings
    lines = [f"soak: {settings.server}, wrk -c{settings.connections} for {settings.duration_s} s "
             f"(warm-up {settings.warmup_s} s), {len(soak.samples)} samples every {settings.interval_s:g} s",
             f"{'':8} {'after warm-up':>14} {'at the end':>12} {'growth':>8}"]
    for name in (*ROLES, None):
        span = soak.growth(name)
        label = name or "total"
        if span is None:
            lines.append(f"{label:8} {'n/a':>14}")
        else:
            lines.append(f"{label:8} {span[0] / MIB:10.1f} MiB {span[1] / MIB:8.1f} MiB {span[1] / span[0] - 1:8.1%}")
    if soak.result is not None:
        r = soak.result
        lines.append(f"wrk: {r.requests} requests ({r.ok_per_second:,.0f}/s ok), {r.non2xx} error responses, "
                     f"{r.errors} socket errors")
    reasons = soak.verdict()
    lines.append("FAIL: " + "; ".join(reasons) if reasons else "PASS")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    defaults = Settings()
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=defaults.duration_s, help="seconds of load")
    parser.add_argument("--warmup", type=int, help="seconds before growth is measured (default: a tenth of the run)")
    parser.add_argument("--interval", type=float, default=defaults.interval_s, help="seconds between samples")
    parser.add_argument("--connections", type=int, default=defaults.connections)
    parser.add_argument("--max-growth", type=float, default=defaults.max_growth, help="allowed growth, 0.10 = 10%%")
    parser.add_argument("--server", choices=[name for name in SERVERS if name.startswith("warpzip")],
                        default=defaults.server)
    args = parser.parse_args(argv)
    warmup = args.duration // 10 if args.warmup is None else args.warmup
    if args.duration < 1 or not 0 <= warmup < args.duration or args.interval <= 0:
        parser.error("need --duration ≥ 1, 0 ≤ --warmup < --duration and --interval > 0")
    settings = Settings(args.duration, warmup, args.interval, args.connections, args.max_growth, args.server)
    with tempfile.TemporaryDirectory(prefix="warpzip-soak-") as scratch:
        soak = run(settings, Path(scratch), progress=True)
    print(render(soak))
    return 1 if soak.verdict() else 0


if __name__ == "__main__":
    sys.exit(main())
