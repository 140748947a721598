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
runs with and without prefaulted buffers back to back; ``--compare-lz77`` adds an lz77_zstd run per
depth (:mod:`~warp.tool.bench.lz77`: the engine's LZ77 pass per 128 KiB BD, the frame by software
zstd in this process, whose CPU it reports). Without ``--root`` the tool starts a device of its own
(``--engines N`` per pool, the pool and timing flags if given) in a temporary root and stops it at
the end. The device's compression pool serves these runs, so "per engine" is per engine of that
pool. ``--saturation`` measures instead each pool's throughput and latency against BDs in flight
(:mod:`~warp.tool.bench.saturation`).

Each device run opens a fresh :class:`~warp.Runtime` (a fresh SVA heap), so a no-prefault run
starts from memory the device has never seen: its first pass over the pool faults every
destination page the engine touches, after which the pool is warm. There is no separate warm-up:
those first faults are what ``IOPF/job`` shows, and their cost is part of the throughput.

The modules: :mod:`~warp.tool.bench.options` (the command line), :mod:`~warp.tool.bench.baselines`
(peer and inline), :mod:`~warp.tool.bench.device` and :mod:`~warp.tool.bench.loops` (the device
runs), :mod:`~warp.tool.bench.measurement` (the figures and their arithmetic, free of I/O),
:mod:`~warp.tool.bench.report` (JSON and text), :mod:`~warp.tool.bench.saturation` (the curve),
:mod:`~warp.tool.bench.progress` and
:mod:`~warp.tool.bench.command` (the run end to end, and ``main``).
"""

from __future__ import annotations

from warp.tool.bench.command import main

__all__ = ["main"]
