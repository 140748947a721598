"""Engines and arbitration (reference §7 items 8, 12, 22): ``--engines N``, round-robin between
queues with deep backlogs, completion order kept per queue, per-engine DFX counters summing to the
per-queue totals."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from tests.harness import start_device
from tests.integration.fidelity import RawQueue, dfx
from warp import abi, codec
from warp.device.launch import stop_process
from warp.dfx import Engine, Queue
from warp.sva import AddressSpace

KIB = 1 << 10
MIB = 1 << 20
JOBS = 150
SIZE = 64 * KIB
BATCH = 8


@pytest.fixture
def space(corpus: dict[str, Path]) -> Iterator[AddressSpace]:
    s = AddressSpace(64 * MIB)
    s.write(0, corpus["dickens"].read_bytes()[:SIZE])
    s.write(SIZE, corpus["xml"].read_bytes()[:SIZE])
    yield s
    s.close()


@pytest.mark.parametrize("engines", [1, 2])
def test_round_robin_between_deep_queues(tmp_path: Path, space: AddressSpace, engines: int) -> None:
    dev = start_device(tmp_path / "root", "--engines", str(engines), "--batch", str(BATCH))
    bound = codec.compress_bound(SIZE)
    queues = [RawQueue(dev.root, space), RawQueue(dev.root, space)]
    counters = dfx(dev.root)
    rows = [counters.queue(q.sqn) for q in queues]
    try:
        for n, q in enumerate(queues):
            dst0 = 2 * MIB + n * JOBS * bound
            space.prefault(dst0, JOBS * bound)
            for j in range(JOBS):
                q.write(n * SIZE, SIZE, dst0 + j * bound, bound, level=9)
        for q in queues:  # A first: B arrives while A's first batch runs
            q.doorbell()
        samples: list[tuple[int, int]] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done = (int(rows[0][Queue.COMPLETED_OK]), int(rows[1][Queue.COMPLETED_OK]))
            samples.append(done)
            if done == (JOBS, JOBS):
                break
            time.sleep(0.0005)
        assert samples[-1] == (JOBS, JOBS)
        both_moving = [(a, b) for a, b in samples if 0 < a < JOBS and 0 < b < JOBS]
        assert both_moving, "the two queues never made progress at the same time"
        if engines == 1:  # one engine alternates batches: neither queue runs ahead of the other
            lag = max(abs(a - b) for a, b in samples if a < JOBS and b < JOBS)
            assert lag <= 3 * BATCH, f"queue lag {lag} > {3 * BATCH}: not round-robin"
        for n, q in enumerate(queues):
            got = q.wait(JOBS)
            assert [c.slot for c in got] == list(range(JOBS)), "completions out of order within a queue"
            assert all(c.status == abi.Status.OK for c in got)
            dst0 = 2 * MIB + n * JOBS * bound
            expect = bytes(space.view[n * SIZE:(n + 1) * SIZE])
            for j in (0, JOBS // 2, JOBS - 1):
                frame = bytes(space.view[dst0 + j * bound:dst0 + j * bound + got[j].produced])
                assert zstandard.ZstdDecompressor().decompress(frame) == expect
        eng = [counters.engine(e) for e in range(engines)]
        for e_col, q_col in ((Engine.JOBS, Queue.SUBMITTED), (Engine.BATCHES, Queue.BATCHES),
                             (Engine.BYTES_IN, Queue.BYTES_IN), (Engine.BYTES_OUT, Queue.BYTES_OUT)):
            assert sum(int(r[e_col]) for r in eng) == sum(int(r[q_col]) for r in rows), e_col.name
        assert sum(int(r[Engine.JOBS]) for r in eng) == 2 * JOBS
        assert sum(int(r[Queue.BYTES_IN]) for r in rows) == 2 * JOBS * SIZE
        assert all(int(r[Engine.JOBS]) > 0 for r in eng), "every engine should have taken work"
        assert all(int(r[Engine.BUSY_NS]) > 0 for r in eng)
        assert all(int(r[Queue.BATCHES]) >= JOBS // BATCH for r in rows)
    finally:
        counters.close()
        for q in queues:
            q.close()
        stop_process(dev.proc)
