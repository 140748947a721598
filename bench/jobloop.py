"""``python -m bench.jobloop``: the library's host CPU per async job, without HTTP.

Starts a device in a temporary root, keeps 32 jobs of 4 KiB in flight on a Runtime under uvloop,
and prints the process CPU per job of five repeats (sorted): the figure a change to the job path
(the SQE writer, the tag pool, the scheduler) moves, without the HTTP work around it. A/B it by
running it from two trees, interleaved (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import uvloop

from warp import Runtime
from warp.device.launch import DeviceProcess


async def _rounds(rt: Runtime, size: int, depth: int, rounds: int) -> int:
    comp = rt.compressor(1)
    data = os.urandom(size // 2) * 2
    for _ in range(rounds):
        results = await asyncio.gather(*(comp.acompress(data) for _ in range(depth)))
        for result in results:
            result.release()
    return rounds * depth


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.jobloop", description=__doc__)
    parser.add_argument("--size", type=int, default=4096, help="bytes per job")
    parser.add_argument("--depth", type=int, default=32, help="jobs in flight")
    parser.add_argument("--rounds", type=int, default=300, help="batches of --depth jobs per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="warpzip-jobloop-"))
    with DeviceProcess(root, "--engines", "2"), \
            Runtime(root, driver="zip", queues=2, heap_size=256 << 20) as rt:
        uvloop.run(_rounds(rt, args.size, args.depth, 200))  # warm-up: pool, contexts, page tables
        per_job = []
        for _ in range(args.repeats):
            cpu = time.process_time()
            jobs = uvloop.run(_rounds(rt, args.size, args.depth, args.rounds))
            per_job.append((time.process_time() - cpu) / jobs * 1e6)
    print("host CPU µs/job:", " ".join(f"{value:.1f}" for value in sorted(per_job)))


if __name__ == "__main__":
    main()
