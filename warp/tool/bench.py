"""``warpzip bench device``: the ``uadk_tool benchmark`` analogue for the warp zstd device.

One run measures, side by side on the same blocks of real data (the Silesia corpus):

* the **peer**: bare python-zstandard on one thread, ``ZstdCompressor(level).compress`` in a loop;
* the **inline** call: the very ``ZSTD_compress2`` an engine makes (``warp.codec.Codec``, the same
  reused context per level), on this thread, from the blocks into a destination buffer — the
  floor of the device's CPU per job;
* the **device**, through the warp library exactly as an application uses it: ``--async`` keeps
  ``--depth`` jobs in flight on one event loop (``Compressor.acompress_buffer`` on buffers from
  the SVA heap's pool — each job copies its block into a pooled source buffer, the result is a
  view into a pooled destination buffer, both go back to the pool); ``--sync`` runs one job at a
  time through ``Compressor.compress`` (so the depth is 1); ``--batch`` hands ``--depth`` jobs at
  a time to ``Compressor.compress_many`` (one doorbell for all of them) and waits for them all.

For both it reports input MB/s, jobs/s, compression ratio and p50/p99 job latency (from per-job
timestamps); for the device also I/O page faults per job (the DFX per-queue IOPF counters of the
run's own queues, before and after), the engines' busy ratio (DFX ``BUSY_NS`` / wall time) and the
headline: the device's MB/s per engine over bare python-zstandard's MB/s. The **device process's
CPU per job** (user + system time of every thread of it, from ``/proc/<pid>/stat`` before and
after the run, over the jobs) is held against the inline call's CPU per job: the ratio is what
the hand-off (rings, doorbells, interrupts, translation, counters) costs on top of zstd.

``--sweep-depth 1,2,4,...`` repeats the async device run at each depth; ``--compare-prefault``
runs with and without prefaulted buffers back to back. Without ``--root`` the tool starts a device
of its own (``--engines N``) in a temporary root and stops it at the end.

Each device run opens a fresh :class:`~warp.Runtime` (a fresh SVA heap), so a no-prefault run
starts from memory the device has never seen: its first pass over the pool faults every
destination page the engine touches, after which the pool is warm. There is no separate warm-up:
those first faults are what ``IOPF/job`` shows, and their cost is part of the throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import bz2
import contextlib
import json
import os
import platform
import shlex
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final, final

import zstandard

from warp import Compressor, JobFailed, Runtime, WarpError, cdev, codec, uacce
from warp.device.launch import DeviceProcess
from warp.dfx import Dfx, Engine, Queue
from warp.iommu.fault import FaultCounter
from warp.tool import stats
from warp.tool.stats import DeviceCounters, Latency, Measurement

PROG: Final = "warpzip bench device"
ALGORITHM: Final = "zstd"
DEFAULT_CORPUS_BYTES: Final = 16 << 20
SLICE_OFFSET_FALLBACK: Final = 1 << 20
TTY_INTERVAL: Final = 0.2
LINE_INTERVAL: Final = 1.0


# ---- options --------------------------------------------------------------------------------
def default_corpus() -> tuple[Path, int]:
    """``bench.corpus.CORPUS_DIR`` and its header skip when the bench package is importable
    (a warp-only install falls back to ``$WARPZIP_CORPUS`` or ``/work/shared/corpus``)."""
    try:
        from bench.corpus import CORPUS_DIR, SLICE_OFFSET
    except ImportError:
        override = os.environ.get("WARPZIP_CORPUS")
        return Path(override or "/work/shared/corpus"), SLICE_OFFSET_FALLBACK
    return Path(CORPUS_DIR), int(SLICE_OFFSET)


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
    runs = parser.add_argument_group("series")
    runs.add_argument("--sweep-depth", default=None, metavar="LIST",
                      help="async runs at each depth, e.g. 1,2,4,8,16,32 (overrides --depth)")
    runs.add_argument("--compare-prefault", action="store_true",
                      help="run with and without prefault back to back (overrides --prefault)")
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
    slice_offset: int
    notes: tuple[str, ...] = ()


def parse_options(argv: Sequence[str]) -> Options:
    parser = build_parser()
    args = parser.parse_args(list(argv))
    notes: list[str] = []
    try:
        block_size = stats.parse_size(args.block_size)
        corpus_bytes = stats.parse_size(args.corpus_bytes)
        depths = stats.parse_depths(args.sweep_depth) if args.sweep_depth else [args.depth]
    except ValueError as exc:
        parser.error(str(exc))
    if args.engines < 1 or (args.queues is not None and args.queues < 1):
        parser.error("--engines and --queues must be at least 1")
    if min(depths) < 1:
        parser.error("--depth must be at least 1")
    if not 0 < args.seconds <= 3600:
        parser.error("--seconds must be within (0, 3600]")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if not -7 <= args.level <= 22:
        parser.error("--level must be within -7..22")
    if args.mode == "sync":
        if args.sweep_depth:
            parser.error("--sweep-depth needs --async (a sync session has one job in flight)")
        if depths != [1]:
            notes.append(f"--sync: one job at a time, depth forced to 1 (was {depths[0]})")
        depths = [1]
    corpus, offset = default_corpus()
    loop = args.loop
    if loop == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            loop = "asyncio"
            notes.append("uvloop is not installed: using the asyncio event loop")
    if args.root is not None and args.engines != 1:
        notes.append("--engines is ignored with --root: the running device has its own")
    return Options(
        root=args.root, engines=args.engines, queues=args.queues or args.engines, block_size=block_size,
        depths=tuple(depths), mode=args.mode, level=args.level,
        prefaults=(True, False) if args.compare_prefault else (bool(args.prefault),),
        seconds=args.seconds, repeat=args.repeat, corpus=args.corpus or corpus, corpus_bytes=corpus_bytes,
        json=args.json, quiet=args.quiet, loop=loop, slice_offset=offset, notes=tuple(notes))


# ---- data -----------------------------------------------------------------------------------
def load_blocks(corpus: Path, block_size: int, total: int, skip: int = SLICE_OFFSET_FALLBACK) -> list[bytes]:
    """Cut the corpus into blocks once: ``total`` bytes spread over the files (``*.bz2``
    decompressed, past ``skip`` bytes of headers; at least one block each), each file cut into
    consecutive ``block_size`` slices, the files interleaved so every stretch of the round-robin
    sees every kind of data."""
    files = sorted(corpus.glob("*.bz2"))
    if not files:
        raise FileNotFoundError(f"no *.bz2 corpus files in {corpus}")
    share = max(block_size, total // len(files) // block_size * block_size)
    per_file: list[list[bytes]] = []
    for path in files:
        with bz2.open(path, "rb") as stream:
            head = stream.read(skip + share)
        data = head[skip:] if len(head) >= skip + block_size else head
        cut = [data[i:i + block_size] for i in range(0, len(data) - block_size + 1, block_size)]
        if cut:
            per_file.append(cut)
    if not per_file:
        raise ValueError(f"no corpus file in {corpus} holds a {block_size}-byte block")
    blocks = [piece[i] for i in range(max(map(len, per_file))) for piece in per_file if i < len(piece)]
    return blocks


# ---- progress -------------------------------------------------------------------------------
@final
class Progress:
    """A single updating stderr line on a TTY, a plain line a second otherwise, or nothing."""

    def __init__(self, stream: IO[str] | None) -> None:
        self.stream = stream
        self.tty = bool(stream is not None and stream.isatty())
        self.interval = TTY_INTERVAL if self.tty else LINE_INTERVAL
        self.label = ""
        self.total = 0.0
        self.started = self.last = 0.0
        self._width = 0

    def start(self, label: str, seconds: float) -> None:
        self.label, self.total = label, seconds
        self.started = self.last = time.monotonic()

    def update(self, jobs: int, bytes_in: int) -> None:
        if self.stream is None:
            return
        now = time.monotonic()
        if not stats.rate_limited(now, self.last, self.interval):
            return
        self.last = now
        self._emit(stats.format_progress(self.label, now - self.started, self.total, jobs, bytes_in))

    def _emit(self, line: str) -> None:
        assert self.stream is not None
        if self.tty:
            self.stream.write("\r" + line.ljust(self._width))
            self._width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self, m: Measurement) -> None:
        if self.stream is None:
            return
        line = stats.format_progress(self.label, m.seconds, self.total, m.jobs, m.bytes_in) + "  done"
        if self.tty:
            self.stream.write("\r" + line.ljust(self._width) + "\n")
            self._width = 0
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def note(self, text: str) -> None:
        if self.stream is not None:
            self.stream.write(text + "\n")
            self.stream.flush()


# ---- measurements ---------------------------------------------------------------------------
@dataclass
class _Tally:
    jobs: int = 0
    errors: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    latencies: list[int] = field(default_factory=list)
    first_frame: bytes | None = None
    statuses: dict[str, int] = field(default_factory=dict)

    def failed(self, exc: JobFailed) -> None:
        self.errors += 1
        key = f"0x{exc.status:02x}"
        self.statuses[key] = self.statuses.get(key, 0) + 1


def measure_peer(blocks: Sequence[bytes], level: int, seconds: float, progress: Progress) -> Measurement:
    """Bare python-zstandard on this thread: the same blocks, round-robin, for ``seconds``."""
    compress = zstandard.ZstdCompressor(level=level).compress
    clock = time.perf_counter_ns
    latencies: list[int] = []
    record = latencies.append
    n = len(blocks)
    jobs = bytes_in = bytes_out = 0
    progress.start("python-zstandard", seconds)
    cpu0 = time.process_time_ns()
    start = clock()
    deadline = start + int(seconds * stats.NS)
    t0 = start
    while t0 < deadline:
        block = blocks[jobs % n]
        out = compress(block)
        t1 = clock()
        record(t1 - t0)
        jobs += 1
        bytes_in += len(block)
        bytes_out += len(out)
        progress.update(jobs, bytes_in)
        t0 = t1
    m = Measurement(label="python-zstandard", jobs=jobs, bytes_in=bytes_in, bytes_out=bytes_out,
                    wall_ns=t0 - start, cpu_ns=time.process_time_ns() - cpu0,
                    latency=Latency.from_ns(latencies), mode="sync", depth=1, samples=tuple(latencies))
    progress.finish(m)
    return m


def measure_inline(blocks: Sequence[bytes], level: int, seconds: float, progress: Progress) -> Measurement:
    """The engines' own zstd call made inline: ``warp.codec.Codec.compress`` (``ZSTD_compress2``
    on a reused context) from each block into one destination of the device's capacity, for
    ``seconds``. Its CPU per job is what a device job would cost if the hand-off were free."""
    worker = codec.Codec()
    size = max(map(len, blocks))
    source = bytearray(b"".join(blocks))
    target = bytearray(codec.compress_bound(size))
    src, dst = codec.pointer(source), codec.pointer(target)
    starts = [0]
    for block in blocks[:-1]:
        starts.append(starts[-1] + len(block))
    lengths = [len(block) for block in blocks]
    compress, capacity, n = worker.compress, len(target), len(blocks)
    clock = time.perf_counter_ns
    latencies: list[int] = []
    record = latencies.append
    jobs = bytes_in = bytes_out = 0
    label = "inline warp.codec"
    progress.start(label, seconds)
    try:
        cpu0 = time.process_time_ns()
        start = clock()
        deadline = start + int(seconds * stats.NS)
        t0 = start
        while t0 < deadline:
            i = jobs % n
            produced = compress(dst, capacity, src + starts[i], lengths[i], level, False)
            t1 = clock()
            record(t1 - t0)
            jobs += 1
            bytes_in += lengths[i]
            bytes_out += produced
            progress.update(jobs, bytes_in)
            t0 = t1
        cpu = time.process_time_ns() - cpu0
    finally:
        codec.release(src)
        codec.release(dst)
    m = Measurement(label=label, jobs=jobs, bytes_in=bytes_in, bytes_out=bytes_out, wall_ns=t0 - start,
                    cpu_ns=cpu, latency=Latency.from_ns(latencies), mode="sync", depth=1, samples=tuple(latencies))
    progress.finish(m)
    return m


def device_pid(root: Path, name: str) -> int:
    """The PID of the device serving ``root``: the peer of a connection to its control socket
    (SO_PEERCRED), so a device this tool did not start is measured too."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
        sock.connect(str(cdev.DevicePaths(root, name).control))
        return cdev.peer_credentials(sock)[0]


def process_cpu_ns(pid: int) -> int:
    """User + system time of every thread of ``pid`` (``/proc/<pid>/stat`` fields 14 and 15,
    clock ticks; threads that ended are included, unlike a sum over ``task/*/schedstat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * stats.NS // _CLK_TCK


_CLK_TCK: Final = os.sysconf("SC_CLK_TCK")


def snapshot(dfx: Dfx, qids: Sequence[int]) -> DeviceCounters:
    return DeviceCounters(
        iopf=sum(int(dfx.queue(q)[Queue.IOPF]) for q in qids),
        queue_jobs=sum(int(dfx.queue(q)[Queue.SUBMITTED]) for q in qids),
        fault_pages=int(dfx.faults[FaultCounter.PAGES_OK]),
        engine_busy_ns=tuple(int(dfx.engine(e)[Engine.BUSY_NS]) for e in range(dfx.engines)),
        engine_jobs=tuple(int(dfx.engine(e)[Engine.JOBS]) for e in range(dfx.engines)),
        batches=sum(int(dfx.queue(q)[Queue.BATCHES]) for q in qids),
        interrupts=sum(int(dfx.queue(q)[Queue.INTERRUPTS]) for q in qids),
        doorbells=sum(int(dfx.queue(q)[Queue.DOORBELLS]) for q in qids))


def settled(dfx: Dfx, qids: Sequence[int], before: DeviceCounters, jobs: int, wait: float = 1.0) -> DeviceCounters:
    """The snapshot once the engines have booked the run's last batch (a CQE is visible to us a
    moment before the engine adds that batch to its counters)."""
    deadline = time.monotonic() + wait
    while True:
        after = snapshot(dfx, qids)
        delta = after - before
        if (delta.queue_jobs >= jobs and sum(delta.engine_jobs) >= jobs) or time.monotonic() > deadline:
            return after
        time.sleep(0.002)


def open_runtime(root: Path, queues: int, prefault: bool, used: set[int], attempts: int = 100) -> Runtime:
    """A fresh runtime whose queues are bound to its own address space.

    The device binds address spaces per process (one mm per process, as the kernel), and unbinds
    when it has processed the close of the process's last queue file — which happens a moment
    after :meth:`Runtime.close` returns. A runtime opened in that window is handed the previous
    runtime's mapping (same PASID, a heap that no longer exists) and every job fails with an
    address fault; so retry until no PASID is one of ``used`` (those of this process's earlier
    runtimes on this device, which never reuses a PASID), then add the new ones to it.
    """
    pasids: set[int] = set()
    for _ in range(attempts):
        rt = Runtime(root, driver="zip", queues=queues, prefault=prefault)
        assert rt.zip is not None  # driver="zip" raises NoDevice otherwise
        pasids = {q.handle.pasid for q in rt.zip.all_queues()}
        if not pasids & used:
            used.update(pasids)
            return rt
        rt.close()
        time.sleep(0.02)
    raise RuntimeError(f"the device kept binding new queues to an earlier runtime's address space (PASID {pasids})")


def device_label(mode: str, depth: int, prefault: bool) -> str:
    return f"device {mode} d={depth} {'prefault' if prefault else 'no-prefault'}"


def measure_device(root: Path, opts: Options, blocks: Sequence[bytes], depth: int, prefault: bool,
                   progress: Progress, used_pasids: set[int], pid: int) -> Measurement:
    """One device run on a fresh runtime (fresh SVA heap, fresh queues); ``pid`` is the device's."""
    rt = open_runtime(root, opts.queues, prefault, used_pasids)
    dfx: Dfx | None = None
    try:
        assert rt.zip is not None  # driver="zip" raises NoDevice otherwise
        qids = [q.handle.sqn for q in rt.zip.all_queues()]
        dfx = Dfx(rt.zip.device.paths.dfx, 0, 0, create=False)
        comp = rt.compressor(opts.level)
        label = device_label(opts.mode, depth, prefault)
        tally = _Tally()
        progress.start(label, opts.seconds)
        before = snapshot(dfx, qids)
        device_cpu0 = process_cpu_ns(pid)
        cpu0 = time.process_time_ns()
        if opts.mode == "sync":
            start, end = _sync_loop(comp, blocks, opts.seconds, tally, progress)
        elif opts.mode == "batch":
            start, end = _batch_loop(comp, blocks, depth, opts.seconds, tally, progress)
        else:
            start, end = _run_loop(opts.loop, lambda: _async_loop(rt, comp, blocks, depth, opts.seconds, tally,
                                                                  progress))
        cpu = time.process_time_ns() - cpu0
        after = settled(dfx, qids, before, tally.jobs + tally.errors)
        device_cpu = process_cpu_ns(pid) - device_cpu0
        heap = rt.heap.statistics()
        extra: dict[str, Any] = {
            "heap_prefaults": heap.misses, "heap_warm_allocs": heap.hits, "fallback_jobs": rt.fallback_jobs,
            "verified": _verify(blocks[0], tally.first_frame),
            "error_statuses": tally.statuses,
        }
        m = Measurement(label=label, jobs=tally.jobs, bytes_in=tally.bytes_in, bytes_out=tally.bytes_out,
                        wall_ns=end - start, cpu_ns=cpu, latency=Latency.from_ns(tally.latencies),
                        samples=tuple(tally.latencies),
                        errors=tally.errors, mode=opts.mode, depth=depth, prefault=prefault,
                        counters=after - before, extra=extra, device_cpu_ns=device_cpu)
        progress.finish(m)
        return m
    finally:
        if dfx is not None:
            dfx.close()
        rt.close()


def _verify(block: bytes, frame: bytes | None) -> bool | None:
    """The run's first job (block 0) decompresses back to its input."""
    if frame is None:
        return None
    try:
        return bool(zstandard.ZstdDecompressor().decompress(frame) == block)
    except zstandard.ZstdError:
        return False


def _sync_loop(comp: Compressor, blocks: Sequence[bytes], seconds: float, tally: _Tally,
               progress: Progress) -> tuple[int, int]:
    clock = time.perf_counter_ns
    n = len(blocks)
    record = tally.latencies.append
    start = clock()
    deadline = start + int(seconds * stats.NS)
    t0 = start
    i = 0
    while t0 < deadline:
        block = blocks[i % n]
        i += 1
        try:
            with comp.compress(block) as result:
                produced = len(result)
                if tally.first_frame is None:
                    tally.first_frame = result.tobytes()
        except JobFailed as exc:
            tally.failed(exc)
            t0 = clock()
            continue
        t1 = clock()
        record(t1 - t0)
        tally.jobs += 1
        tally.bytes_in += len(block)
        tally.bytes_out += produced
        progress.update(tally.jobs, tally.bytes_in)
        t0 = t1
    return start, t0


def _batch_loop(comp: Compressor, blocks: Sequence[bytes], depth: int, seconds: float, tally: _Tally,
                progress: Progress) -> tuple[int, int]:
    """``depth`` consecutive blocks per ``compress_many`` call; each job's latency is its batch's."""
    clock = time.perf_counter_ns
    n = len(blocks)
    start = clock()
    deadline = start + int(seconds * stats.NS)
    t0 = start
    i = 0
    while t0 < deadline:
        batch = [blocks[(i + k) % n] for k in range(depth)]
        first = i == 0
        i += depth
        try:
            results = comp.compress_many(batch)
        except JobFailed as exc:
            tally.failed(exc)
            t0 = clock()
            continue
        t1 = clock()
        for block, result in zip(batch, results, strict=True):
            with result:
                tally.bytes_out += len(result)
                if first and tally.first_frame is None:
                    tally.first_frame = result.tobytes()
            tally.bytes_in += len(block)
        tally.jobs += depth
        tally.latencies.extend([t1 - t0] * depth)
        progress.update(tally.jobs, tally.bytes_in)
        t0 = t1
    return start, t0


async def _async_loop(rt: Runtime, comp: Compressor, blocks: Sequence[bytes], depth: int, seconds: float,
                      tally: _Tally, progress: Progress) -> tuple[int, int]:
    """``depth`` workers on one loop, each: take the next block, copy it into a pooled SVA
    buffer, ``acompress_buffer`` it, release the result. Together they keep ``depth`` in flight."""
    clock = time.perf_counter_ns
    n = len(blocks)
    record = tally.latencies.append
    cursor = 0
    start = clock()
    deadline = start + int(seconds * stats.NS)

    async def worker() -> None:
        nonlocal cursor
        while clock() < deadline:
            i = cursor
            cursor += 1
            block = blocks[i % n]
            t0 = clock()
            src = rt.alloc(len(block))
            try:
                src.write(0, block)
            except BaseException:
                src.release()
                raise
            try:
                result = await comp.acompress_buffer(src, len(block))
            except JobFailed as exc:
                tally.failed(exc)
                continue
            with result:
                produced = len(result)
                if i == 0:
                    tally.first_frame = result.tobytes()
            record(clock() - t0)
            tally.jobs += 1
            tally.bytes_in += len(block)
            tally.bytes_out += produced
            progress.update(tally.jobs, tally.bytes_in)

    await asyncio.gather(*(worker() for _ in range(depth)))
    return start, clock()


def _run_loop(loop: str, main: Callable[[], Coroutine[Any, Any, tuple[int, int]]]) -> tuple[int, int]:
    if loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main())
    return asyncio.run(main())


# ---- the run --------------------------------------------------------------------------------
@contextlib.contextmanager
def device_root(opts: Options, progress: Progress) -> Iterator[tuple[Path, int | None]]:
    """The root to bench: ``--root``, or an embedded device's (yields its PID, stopped after)."""
    if opts.root is not None:
        yield opts.root, None
        return
    with tempfile.TemporaryDirectory(prefix="warpzip-bench-") as scratch, \
            DeviceProcess(Path(scratch) / "root", "--engines", str(opts.engines),
                          log=Path(scratch) / "device.log") as device:
        pid = device.pid
        progress.note(f"started device pid {pid} with {opts.engines} engine(s) in {device.root}")
        assert pid is not None  # started above
        yield device.root, pid
    progress.note(f"stopped device pid {pid}")


def run(opts: Options, argv: Sequence[str], out: IO[str], err: IO[str]) -> dict[str, Any]:
    progress = Progress(None if opts.quiet else err)
    for note in opts.notes:
        err.write(f"{PROG}: {note}\n")
    started = time.time()
    blocks = load_blocks(opts.corpus, opts.block_size, opts.corpus_bytes, opts.slice_offset)
    with device_root(opts, progress) as (root, pid):
        found = uacce.devices(root, ALGORITHM)
        if not found:
            raise SystemExit(f"{PROG}: no {ALGORITHM} device under {root}")
        dfx = Dfx(found[0].paths.dfx, 0, 0, create=False)
        engines = dfx.engines
        dfx.close()
        served_by = device_pid(root, found[0].name) if pid is None else pid
        used_pasids: set[int] = set()
        configs = [(depth, prefault) for prefault in opts.prefaults for depth in opts.depths]
        peers: list[Measurement] = []
        inlines: list[Measurement] = []
        rounds: list[list[Measurement]] = []
        for _ in range(opts.repeat):  # interleaved, so drift in the machine's load hits both sides
            peers.append(measure_peer(blocks, opts.level, opts.seconds, progress))
            inlines.append(measure_inline(blocks, opts.level, opts.seconds, progress))
            rounds.append([measure_device(root, opts, blocks, depth, prefault, progress, used_pasids, served_by)
                           for depth, prefault in configs])
        peer = stats.merge(peers)
        inline = stats.merge(inlines)
        runs = [stats.merge([r[i] for r in rounds]) for i in range(len(configs))]
    top = stats.best(runs)
    report = {
        "tool": PROG, "version": 1, "command": shlex.join(["warpzip", "bench", "device", *argv]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "config": {
            "algorithm": ALGORITHM, "level": opts.level, "block_size": opts.block_size, "mode": opts.mode,
            "depths": list(opts.depths), "prefault": list(opts.prefaults), "seconds": opts.seconds,
            "repeat": opts.repeat,
            "queues_per_direction": opts.queues, "loop": opts.loop if opts.mode == "async" else None,
            "corpus": str(opts.corpus), "corpus_bytes": sum(map(len, blocks)), "blocks": len(blocks),
        },
        "device": {"name": found[0].name, "root": str(root), "embedded": pid is not None, "pid": served_by,
                   "engines": engines},
        "machine": {"cpus": os.cpu_count(), "loadavg": [round(x, 2) for x in os.getloadavg()],
                    "python": platform.python_version(), "zstandard": zstandard.__version__,
                    "zstd": zstandard.ZSTD_VERSION, "platform": platform.platform()},
        "peer": stats.measurement_dict(peer),
        "inline": stats.measurement_dict(inline),
        "runs": [stats.measurement_dict(m, peer, inline) for m in runs],
        "headline": {"run": top.label, "device_mb_s": round(top.mb_s, 3),
                     "device_mb_s_per_engine": round(top.mb_s_per_engine, 3), "engines": engines,
                     "bare_mb_s": round(peer.mb_s, 3), "per_engine_vs_bare": round(top.vs(peer), 4),
                     "device_cpu_us_per_job": round(top.cpu_us_per_job, 2),
                     "inline_cpu_us_per_job": round(inline.cpu_us_per_job, 2),
                     "cpu_vs_inline": round(top.cpu_vs(inline), 4)},
        "notes": list(opts.notes),
    }
    out.write(render_report(report, peer, inline, runs, opts, engines) + "\n")
    out.flush()
    return report


def render_report(report: dict[str, Any], peer: Measurement, inline: Measurement, runs: Sequence[Measurement],
                  opts: Options, engines: int) -> str:
    cfg, dev = report["config"], report["device"]
    files = sorted(p.stem for p in opts.corpus.glob("*.bz2"))
    where = "embedded, stopped after the run" if dev["embedded"] else f"under {dev['root']}"
    lines = [
        f"{PROG}: {ALGORITHM} level {opts.level}, {stats.human_size(opts.block_size)} blocks, "
        f"{cfg['blocks']} blocks ({stats.human_size(cfg['corpus_bytes'])}) of {'/'.join(files)} round-robin, "
        f"{opts.seconds:g} s per run" + (f", {opts.repeat} interleaved repeats summed" if opts.repeat > 1 else ""),
        f"device {dev['name']} ({where}): {engines} engine(s), {opts.queues} queue(s) per direction; "
        f"mode {opts.mode}" + {"sync": " (one job at a time: depth 1)", "batch": " (depth jobs per compress_many)"}
        .get(opts.mode, f", {opts.loop} loop"),
        "",
        stats.render_table(stats.HEADERS, stats.table_rows(peer, runs, inline)),
        "",
    ]
    if len(opts.prefaults) == 2:
        for depth in opts.depths:
            pair = [m for m in runs if m.depth == depth]
            with_pf = next(m for m in pair if m.prefault)
            without = next(m for m in pair if not m.prefault)
            lines.append(f"IOPFs/job at depth {depth}: prefault {with_pf.iopf_per_job:.4f} "
                         f"({with_pf.counters.iopf if with_pf.counters else 0} faults), "
                         f"no-prefault {without.iopf_per_job:.4f} "
                         f"({without.counters.iopf if without.counters else 0} faults)")
    for m in runs:
        if m.errors or m.extra.get("fallback_jobs") or m.extra.get("verified") is False:
            lines.append(f"warning: {m.label}: {m.errors} failed job(s) (engine status: count "
                         f"{m.extra.get('error_statuses')}), {m.extra.get('fallback_jobs')} re-run on the cpu, "
                         f"output verified: {m.extra.get('verified')}")
    lines.append(stats.headline(peer, stats.best(runs)))
    lines.append(stats.cpu_headline(inline, stats.best(runs)))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    opts = parse_options(args)
    try:
        report = run(opts, args, sys.stdout, sys.stderr)
    except KeyboardInterrupt:
        sys.stderr.write(f"\n{PROG}: interrupted\n")
        return 130
    except (OSError, ValueError, RuntimeError, WarpError) as exc:
        sys.stderr.write(f"{PROG}: {exc}\n")
        return 1
    if opts.json is not None:
        opts.json.write_text(json.dumps(report, indent=2) + "\n")
    failed = any(r["jobs"] == 0 or r["verified"] is False for r in report["runs"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
