"""The command line of ``warpzip bench device``: the parser, and the checked :class:`Options` a run takes."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, final

from warp.tool.corpus import CORPUS_DIR
from warp.tool.units import parse_size

PROG: Final = "warpzip bench device"


def parse_depths(text: str) -> list[int]:
    """``1,2,4,8`` → ``[1, 2, 4, 8]``: positive, duplicates dropped, order kept."""
    try:
        depths = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"not a list of depths: {text!r} (try 1,2,4,8,16,32)") from None
    if not depths or min(depths) < 1:
        raise ValueError("depths must be positive integers")
    return list(dict.fromkeys(depths))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Device-level zstd benchmark against bare python-zstandard in the same run "
                               "(the analogue of uadk_tool benchmark).",
        epilog="Example: warpzip bench device --block-size 64k --sweep-depth 1,2,4,8,16,32 --compare-prefault")
    where = parser.add_argument_group("device")
    where.add_argument("--root", type=Path, default=None,
                       help="runtime root of a running device (default: start one in a temporary root)")
    where.add_argument("--engines", type=int, default=1,
                       help="engines of the device this tool starts (ignored with --root), default 1")
    where.add_argument("--comp-engines", type=int, default=None,
                       help="engines of the started device's compression pool, default --engines")
    where.add_argument("--decomp-engines", type=int, default=None,
                       help="engines of the started device's decompression pool, default --engines")
    where.add_argument("--bd-latency-us", type=float, default=0.0,
                       help="the started device's timing model: every BD takes at least this long (default 0: off)")
    where.add_argument("--engine-mb-s", type=float, default=0.0,
                       help="the started device's timing model: engine MB/s of uncompressed bytes (default 0: off)")
    where.add_argument("--queues", type=int, default=None,
                       help="queues per direction the benchmark opens (uadk_tool --ctxnum), default = engines")
    job = parser.add_argument_group("jobs")
    job.add_argument("--block-size", default="64k", help="bytes per job: 4k, 8k, 64k, 1m ... (default 64k)")
    job.add_argument("--depth", type=int, default=32, help="async: jobs in flight, default 32")
    mode = job.add_mutually_exclusive_group()
    mode.add_argument("--async", dest="mode", action="store_const", const="async",
                      help="depth jobs in flight on one event loop (default)")
    mode.add_argument("--sync", dest="mode", action="store_const", const="sync",
                      help="one job at a time through Compressor.compress (depth forced to 1)")
    mode.add_argument("--batch", dest="mode", action="store_const", const="batch",
                      help="depth jobs at a time through Compressor.compress_many (one doorbell), waiting for all")
    job.add_argument("--level", type=int, default=3, help="zstd level, default 3")
    job.add_argument("--prefault", action=argparse.BooleanOptionalAction, default=True,
                     help="prefault pool buffers on the CPU before the device sees them (default on)")
    job.add_argument("--seconds", type=float, default=5.0, help="length of each measurement, default 5")
    job.add_argument("--repeat", type=int, default=1,
                     help="measure everything N times, interleaved (peer, device runs, peer, ...), and report "
                          "the sums, with each repeat's MB/s in the JSON; default 1")
    job.add_argument("--corpus", type=Path, default=None, help="directory of *.bz2 corpus files "
                                                               "(default: the Silesia corpus in shared/corpus)")
    job.add_argument("--corpus-bytes", default="16m",
                     help="data cut into blocks at start, spread over the corpus files, default 16m")
    job.add_argument("--compare-lz77", action="store_true",
                     help="also run lz77_zstd (the engine's LZ77 pass per 128 KiB BD, the frame by software "
                          "zstd) in the same mode, depth and level")
    runs = parser.add_argument_group("series")
    runs.add_argument("--sweep-depth", default=None, metavar="LIST",
                      help="async runs at each depth, e.g. 1,2,4,8,16,32 (overrides --depth)")
    runs.add_argument("--compare-prefault", action="store_true",
                      help="run with and without prefault back to back (overrides --prefault)")
    runs.add_argument("--saturation", action="store_true",
                      help="instead of the comparison: each pool's throughput and latency against BDs in flight")
    runs.add_argument("--inflight", default=None, metavar="LIST",
                      help="--saturation: BDs in flight per point, e.g. 1,2,4,8 (default 1, 2, 4 ... 4 x the pool)")
    out = parser.add_argument_group("output")
    out.add_argument("--json", type=Path, default=None, metavar="PATH", help="write every figure as JSON to PATH")
    out.add_argument("--quiet", action="store_true", help="no progress display")
    out.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop",
                     help="event loop for --async (default uvloop, as the service; asyncio if uvloop is missing)")
    parser.set_defaults(mode="async")
    return parser


@final
@dataclass(frozen=True)
class Options:
    root: Path | None
    engines: int
    queues: int
    block_size: int
    depths: tuple[int, ...]
    mode: str
    level: int
    prefaults: tuple[bool, ...]
    seconds: float
    repeat: int
    corpus: Path
    corpus_bytes: int
    json: Path | None
    quiet: bool
    loop: str
    notes: tuple[str, ...] = ()
    #: Also measure lz77_zstd (:mod:`warp.tool.bench.lz77`).
    lz77: bool = False
    device_args: tuple[str, ...] = ()  # flags of the device the tool starts (``--engines N`` and the pool flags)
    saturation: bool = False
    inflight: tuple[int, ...] = ()  # empty: the default curve per pool


def parse_options(argv: Sequence[str]) -> Options:
    parser = build_parser()
    args = parser.parse_args(list(argv))
    notes: list[str] = []
    try:
        block_size = parse_size(args.block_size)
        corpus_bytes = parse_size(args.corpus_bytes)
        depths = parse_depths(args.sweep_depth) if args.sweep_depth else [args.depth]
        _check_ranges(args, depths)
        depths = _mode_depths(args, depths, notes)
        inflight = parse_depths(args.inflight) if args.inflight else []
    except ValueError as exc:
        parser.error(str(exc))
    loop = _event_loop(args.loop, notes)
    device_args = _device_args(args)
    if args.root is not None and device_args != ("--engines", "1"):
        notes.append("--engines, the pool and the timing flags are ignored with --root: the running device has its own")
    return Options(
        root=args.root, engines=args.engines, queues=args.queues or args.engines, block_size=block_size,
        depths=tuple(depths), mode=args.mode, level=args.level,
        prefaults=(True, False) if args.compare_prefault else (bool(args.prefault),),
        seconds=args.seconds, repeat=args.repeat, corpus=args.corpus or CORPUS_DIR, corpus_bytes=corpus_bytes,
        json=args.json, quiet=args.quiet, loop=loop, notes=tuple(notes), lz77=args.compare_lz77,
        device_args=device_args,
        saturation=args.saturation, inflight=tuple(inflight))


def _device_args(args: argparse.Namespace) -> tuple[str, ...]:
    """The flags of the device the tool starts: ``--engines N``, then only the pool and timing
    flags given (the device checks them, as for any user)."""
    out = ["--engines", str(args.engines)]
    for flag in ("comp_engines", "decomp_engines", "bd_latency_us", "engine_mb_s"):
        value = getattr(args, flag)
        if value:
            out += ["--" + flag.replace("_", "-"), str(value)]
    return tuple(out)


def _check_ranges(args: argparse.Namespace, depths: Sequence[int]) -> None:
    """Every number the run takes is within its range; ``ValueError`` names the first that is not."""
    if any(n is not None and n < 1 for n in (args.engines, args.comp_engines, args.decomp_engines, args.queues)):
        raise ValueError("--engines, --comp-engines, --decomp-engines and --queues must be at least 1")
    if args.bd_latency_us < 0 or args.engine_mb_s < 0:
        raise ValueError("--bd-latency-us and --engine-mb-s must not be negative")
    if min(depths) < 1:
        raise ValueError("--depth must be at least 1")
    if not 0 < args.seconds <= 3600:
        raise ValueError("--seconds must be within (0, 3600]")
    if args.repeat < 1:
        raise ValueError("--repeat must be at least 1")
    if not -7 <= args.level <= 22:
        raise ValueError("--level must be within -7..22")


def _mode_depths(args: argparse.Namespace, depths: list[int], notes: list[str]) -> list[int]:
    """The depths the mode allows: a sync session has one job in flight, so its depth is 1."""
    if args.mode != "sync":
        return depths
    if args.sweep_depth:
        raise ValueError("--sweep-depth needs --async (a sync session has one job in flight)")
    if depths != [1]:
        notes.append(f"--sync: one job at a time, depth forced to 1 (was {depths[0]})")
    return [1]


def _event_loop(loop: str, notes: list[str]) -> str:
    """``uvloop`` (as the service) when it is installed, else ``asyncio`` with a note."""
    if loop == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            notes.append("uvloop is not installed: using the asyncio event loop")
            return "asyncio"
    return loop
