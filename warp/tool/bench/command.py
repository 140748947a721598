"""``warpzip bench device`` end to end: the corpus cut into blocks, the interleaved repeats of the
peer, the inline call and every device configuration, then the report on stdout (and ``--json``)."""

from __future__ import annotations

import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from warp import WarpError, uacce
from warp.dfx import Dfx
from warp.tool import corpus
from warp.tool.bench import report, saturation
from warp.tool.bench.baselines import measure_inline, measure_peer
from warp.tool.bench.device import device_pid, device_root, measure_device
from warp.tool.bench.lz77 import measure_lz77
from warp.tool.bench.measurement import Measurement, merge
from warp.tool.bench.options import PROG, Options, parse_options
from warp.tool.bench.progress import Progress
from warp.tool.bench.report import ALGORITHM, Target


def find_target(root: Path, embedded_pid: int | None) -> Target:
    """The zstd device under ``root``: its name, the engines of its compression pool (from DFX:
    the ones that serve the benchmark's jobs, so "per engine" means per engine that could) and the
    PID serving it."""
    found = uacce.devices(root, ALGORITHM)
    if not found:
        raise SystemExit(f"{PROG}: no {ALGORITHM} device under {root}")
    dfx = Dfx(found[0].paths.dfx, 0, 0, create=False)
    engines = saturation.pool_sizes(dfx)["compress"]
    dfx.close()
    served_by = device_pid(root, found[0].name) if embedded_pid is None else embedded_pid
    return Target(name=found[0].name, root=root, embedded=embedded_pid is not None, pid=served_by, engines=engines)


def run(opts: Options, argv: Sequence[str], out: IO[str], err: IO[str]) -> dict[str, Any]:
    progress = Progress(None if opts.quiet else err)
    for note in opts.notes:
        err.write(f"{PROG}: {note}\n")
    started = time.time()
    blocks = corpus.blocks(opts.corpus, opts.block_size, opts.corpus_bytes)
    if opts.saturation:
        return run_saturation(opts, argv, blocks, out, progress)
    with device_root(opts, progress) as (root, pid):
        target = find_target(root, pid)
        used_pasids: set[int] = set()
        configs = [(depth, prefault) for prefault in opts.prefaults for depth in opts.depths]
        peers: list[Measurement] = []
        inlines: list[Measurement] = []
        rounds: list[list[Measurement]] = []
        for _ in range(opts.repeat):  # interleaved, so drift in the machine's load hits both sides
            peers.append(measure_peer(blocks, opts.level, opts.seconds, progress))
            inlines.append(measure_inline(blocks, opts.level, opts.seconds, progress))
            rounds.append([measure_device(root, opts, blocks, depth, prefault, progress, used_pasids, target.pid)
                           for depth, prefault in configs]
                          + [measure_lz77(root, opts, blocks, depth, progress, used_pasids, target.pid)
                             for depth in (opts.depths if opts.lz77 else ())])
        peer = merge(peers)
        inline = merge(inlines)
        runs = [merge([r[i] for r in rounds]) for i in range(len(rounds[0]))]
    figures = report.build(opts, argv, started, blocks, target, peer, inline, runs)
    out.write(report.render_report(figures, peer, inline, runs, opts, target.engines) + "\n")
    out.flush()
    return figures


def run_saturation(opts: Options, argv: Sequence[str], blocks: Sequence[bytes], out: IO[str],
                   progress: Progress) -> dict[str, Any]:
    """``--saturation``: each pool's curve (:mod:`~warp.tool.bench.saturation`), as a table and JSON."""
    with device_root(opts, progress) as (root, pid):
        target = find_target(root, pid)
        dfx = Dfx(uacce.devices(root, ALGORITHM)[0].paths.dfx, 0, 0, create=False)
        try:
            sizes = saturation.pool_sizes(dfx)
            limit = dfx.queues // 2  # a point opens its in-flight count of queues per direction
        finally:
            dfx.close()
        points = saturation.measure_curve(root, opts, blocks, sizes, limit, progress)
    out.write(saturation.render_curve(points, sizes) + "\n")
    out.flush()
    return {"tool": PROG, "command": shlex.join(["warpzip", "bench", "device", *argv]),
            "config": {"level": opts.level, "block_size": opts.block_size, "seconds": opts.seconds,
                       "device_args": list(opts.device_args) if target.embedded else None},
            "device": {"name": target.name, "pid": target.pid, "pools": sizes},
            "saturation": [p.as_dict() for p in points]}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    opts = parse_options(args)
    try:
        figures = run(opts, args, sys.stdout, sys.stderr)
    except KeyboardInterrupt:
        sys.stderr.write(f"\n{PROG}: interrupted\n")
        return 130
    except (OSError, ValueError, RuntimeError, WarpError) as exc:
        sys.stderr.write(f"{PROG}: {exc}\n")
        return 1
    if opts.json is not None:
        opts.json.write_text(json.dumps(figures, indent=2) + "\n")
    rows = figures["runs"] if "runs" in figures else figures["saturation"]
    failed = any(r["jobs"] == 0 or r.get("verified") is False for r in rows)
    return 1 if failed else 0
