"""``python -m bench``: every server in turn, under the same bodies and wrk load, in one run.

Servers run one at a time (a second server idling next to the measured one could still take CPU on
a two-core machine), each on its own port, verified before it is timed and killed with its whole
process tree after. A server that fails becomes a FAILED row, never a crash of the run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench import dictbench, plots, proctree, wrk
from bench.bodies import PROFILES, Profile, body_paths, describe, materialise, parse_profiles
from bench.report import Meta, Role, Row, render_markdown, to_json
from bench.server import DEFAULT_SERVERS, SERVERS, RunningServer, ServerFailed, ServerSpec
from warp.tool.corpus import CORPUS_DIR, SLICE_OFFSET
from warp.tool.units import human_size

DEFAULT_SIZES = "4k,64k,1m"
DEFAULT_CONNECTIONS = "32"
DEFAULT_LOADS = (f"{DEFAULT_SIZES}@{DEFAULT_CONNECTIONS}", "4k,64k@256")
"""Every size at the usual concurrency, then the small sizes overloaded (eight times the
connections), where the p99s part: about five minutes for the default servers."""

Cell = tuple[Profile, int]
"""One table: a body profile under a connection count."""


@dataclass(frozen=True)
class Load:
    """How each row is measured, the same for every server."""

    level: int
    duration_s: int
    warmup_s: int


def parse_connections(values: Sequence[str]) -> list[int]:
    """``32`` or ``1,4,16 64``: the connection counts to sweep, each at least 1, in given order."""
    counts = [int(part) for value in values for part in value.split(",") if part.strip()]
    if not counts or min(counts) < 1:
        raise ValueError("connections must be positive integers")
    return list(dict.fromkeys(counts))


def parse_loads(values: Sequence[str]) -> list[Cell]:
    """``4k,64k,1m@32 4k,64k@256`` → (profile, connections) cells, each once, in given order."""
    cells: list[Cell] = []
    for value in values:
        sizes, at, counts = value.partition("@")
        if not at:
            raise ValueError(f"a load is SIZES@CONNECTIONS, e.g. 4k,64k@256; got {value!r}")
        counts_here = parse_connections([counts])
        cells += [(profile, count) for profile in parse_profiles([sizes]) for count in counts_here]
    return list(dict.fromkeys(cells))


def choose_loads(args: argparse.Namespace) -> list[Cell]:
    """The cells to measure: ``--loads``, else ``--sizes`` × ``--connections`` if either is given
    (a custom run gets no overload rows it did not ask for), else :data:`DEFAULT_LOADS`."""
    if args.sizes is None and args.connections is None:
        return parse_loads(args.loads or DEFAULT_LOADS)
    if args.loads:
        raise ValueError("--loads cannot be combined with --sizes/--connections")
    sizes = ",".join(args.sizes or [DEFAULT_SIZES])
    counts = ",".join(args.connections or [DEFAULT_CONNECTIONS])
    return parse_loads([f"{sizes}@{counts}"])


def parse_servers(values: Sequence[str]) -> list[ServerSpec]:
    """Server names (comma lists allowed) → specs, in the order given."""
    names = list(dict.fromkeys(part.strip() for value in values for part in value.split(",") if part.strip()))
    unknown = [name for name in names if name not in SERVERS]
    if unknown or not names:
        raise ValueError(f"unknown servers {unknown}; choose from {', '.join(SERVERS)}")
    return [SERVERS[name] for name in names]


def build_parser(prog: str = "python -m bench") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("--servers", nargs="+", default=[",".join(DEFAULT_SERVERS)],
                        help=f"default {','.join(DEFAULT_SERVERS)}; any of {', '.join(SERVERS)}")
    parser.add_argument("--loads", nargs="+", metavar="SIZES@CONNECTIONS",
                        help=f"tables to measure (default: {' '.join(DEFAULT_LOADS)})")
    parser.add_argument("--sizes", nargs="+", help=f"instead of --loads, with --connections: any of "
                        f"{', '.join(PROFILES)} (default {DEFAULT_SIZES})")
    parser.add_argument("--connections", nargs="+", help="instead of --loads, with --sizes: e.g. 1,4,16,32,64,128,256 "
                        f"for a sweep (default {DEFAULT_CONNECTIONS})")
    parser.add_argument("--duration", type=int, default=10, help="measured seconds per table row")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured seconds before each row (0: none)")
    parser.add_argument("--level", type=int, default=3, help="zstd level in the URL")
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS-run.md"), help="markdown report")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--plots", type=Path, help="write PNG plots here (needs matplotlib)")
    parser.add_argument("--corpus", type=Path, default=CORPUS_DIR, help="directory of Silesia *.bz2")
    parser.add_argument("--dictionary", action="store_true", help="instead of the server table: warpzip with a "
                        "trained zstd dictionary against without, on generated JSON events of each --sizes "
                        "(default 4k) at each --connections (default 32): ratio and req/s")
    return parser


def _command_output(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    except OSError:
        return "unknown"


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def host_meta(argv: Sequence[str], load: Load, profiles: Sequence[Profile]) -> Meta:
    """Where and how this run is made, for the report's header."""
    wrk_banner = _command_output(["wrk", "-v"]).splitlines()
    return Meta(
        command=shlex.join(["python", "-m", "bench", *argv]),
        date=datetime.now(UTC).isoformat(timespec="seconds"),
        uname=_command_output(["uname", "-a"]),
        cpu_model=_cpu_model(),
        cores=len(os.sched_getaffinity(0)),  # what this run may use, not the host's count
        wrk_version=wrk_banner[0].split(" Copyright")[0] if wrk_banner else "wrk",
        level=load.level,
        duration_s=load.duration_s,
        warmup_s=load.warmup_s,
        corpus=f"Silesia corpus slices from offset {human_size(SLICE_OFFSET)}: "
        + "; ".join(f"{profile.label} = {describe(profile)}" for profile in profiles),
    )


def measure(
    server: RunningServer,
    profile: Profile,
    bodies: list[Path],
    connections: int,
    load: Load,
) -> Row:
    """One table row: warm-up, then a measured wrk run with the server's tree sampled throughout.

    warpzip's row fails if no device process was seen: its CPU would then all count as host CPU,
    a wrong number that looks right.
    """
    row = Row(server.spec.name, server.spec.role, profile.label, connections, profile.mean_size)
    url = server.url(load.level)
    try:
        if load.warmup_s > 0:
            wrk.run(url, connections, load.warmup_s, bodies)
        with proctree.TreeSampler(server.process.pid) as sampler:
            result = wrk.run(url, connections, load.duration_s, bodies)
    except (RuntimeError, ValueError, subprocess.TimeoutExpired) as error:
        server.ensure_alive()  # a dead server fails every remaining row, not only this one
        return dataclasses.replace(row, failure=f"wrk: {error}")
    server.remember(sampler.seen)
    server.ensure_alive()
    usage = sampler.usage()
    if server.spec.role is Role.WARPZIP and usage.device_cpu_seconds is None:
        return dataclasses.replace(row, failure=f"no `-m {proctree.DEVICE_MODULE}` process in the server's tree")
    return dataclasses.replace(row, wrk=result, cpu_seconds=usage.cpu_seconds,
                               device_cpu_seconds=usage.device_cpu_seconds, peak_rss_bytes=usage.peak_rss_bytes)


def run_server(spec: ServerSpec, cells: Sequence[Cell], load: Load, scratch: Path) -> list[Row]:
    """All rows of one server, each profile verified once before its first row; whatever it could
    not measure is a FAILED row saying why."""
    rows: list[Row] = []
    problems: dict[Profile, str | None] = {}

    def fail(profile: Profile, count: int, reason: str) -> Row:
        return Row(spec.name, spec.role, profile.label, count, profile.mean_size, failure=reason)

    try:
        with RunningServer(spec, scratch) as server:
            server.wait_ready()
            for profile, count in cells:
                bodies = body_paths(profile, scratch)
                if profile not in problems:
                    try:
                        server.verify(load.level, [path.read_bytes() for path in dict.fromkeys(bodies)])
                        problems[profile] = None
                    except ServerFailed as error:
                        problems[profile] = str(error)
                reason = problems[profile]
                rows.append(_progress(measure(server, profile, bodies, count, load) if reason is None
                                      else fail(profile, count, reason)))
    except ServerFailed as error:
        done = {(row.size, row.connections) for row in rows}
        rows += [
            _progress(fail(profile, count, str(error)))
            for profile, count in cells
            if (profile.label, count) not in done
        ]
    return rows


def _progress(row: Row) -> Row:
    """Prints a row as soon as it is known (a full sweep takes many minutes), and passes it on."""
    outcome = f"FAILED: {row.failure}" if row.failure else f"{row.req_per_s:,.0f} req/s"
    print(f"  {row.server:<13} {row.size:>7} c{row.connections:<4} {outcome}", file=sys.stderr, flush=True)
    return row


def _dictionary(args: argparse.Namespace) -> int:
    """``--dictionary``: :mod:`bench.dictbench` for each size and connection count."""
    sizes = [profile.slices[0].size for profile in parse_profiles(args.sizes or ["4k"]) if len(profile.slices) == 1]
    sections = []
    with tempfile.TemporaryDirectory(prefix="warpzip-bench-") as scratch_name:
        for size in sizes:
            for count in parse_connections(args.connections or [DEFAULT_CONNECTIONS]):
                try:
                    rows = dictbench.measure(Path(scratch_name), size, args.level, count, args.duration, args.warmup)
                except ServerFailed as error:
                    print(f"FAILED: {error}", file=sys.stderr)
                    return 1
                sections.append(dictbench.render(rows, size, args.level, count, args.duration))
    markdown = "\n".join(sections)
    args.out.write_text(markdown)
    print(markdown)
    return 0


def main(argv: Sequence[str] | None = None, prog: str = "python -m bench") -> int:
    """``make bench`` (``python -m bench``) and ``warpzip bench http`` (named ``prog`` in its usage)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    try:
        servers = parse_servers(args.servers)
        cells = choose_loads(args)
    except ValueError as error:
        parser.error(str(error))
    if args.duration < 1 or args.warmup < 0:
        parser.error("--duration must be ≥ 1 and --warmup ≥ 0")
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    if not args.corpus.is_dir():
        print(f"no corpus at {args.corpus} (expected shared/corpus beside the repository)", file=sys.stderr)
        return 2

    if args.dictionary:
        return _dictionary(args)
    load = Load(args.level, args.duration, args.warmup)
    profiles = list(dict.fromkeys(profile for profile, _ in cells))
    meta = host_meta(argv, load, profiles)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="warpzip-bench-") as scratch_name:
        scratch = Path(scratch_name)
        materialise(profiles, scratch, args.corpus)
        for spec in servers:
            print(f"{spec.name}:", file=sys.stderr, flush=True)
            rows += run_server(spec, cells, load, scratch)

    markdown = render_markdown(meta, rows)
    args.out.write_text(markdown)
    print(markdown)
    print(f"wrote {args.out}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(to_json(meta, rows), indent=2) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    if args.plots:
        try:
            written = plots.plot(rows, args.plots)
        except ImportError:
            print("matplotlib is not installed: skipping plots (pip install matplotlib)", file=sys.stderr)
        else:
            print(f"wrote {', '.join(map(str, written))}", file=sys.stderr)
    return 0
