"""Engine pools and the timing model (reference §7 item 12, §2.1 ZIP cores): separate compression
and decompression pools, a queue's direction picking its pool, per-engine DFX rows naming their
pool, and the saturation curve of a finite pool under ``--bd-latency-us``. Timing appears only as
ratios within one run, with a modelled latency large enough that real CPU time does not matter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import zstandard

from tests.harness import REPO, start_device
from tests.integration.fidelity import RawQueue, dfx, loaded_space, wait_for
from warp import abi, codec
from warp.device.launch import stop_process
from warp.dfx import Engine, Queue

KIB = 1 << 10
MIB = 1 << 20
BLOCK = 16 * KIB
BACKLOG = 10  # decompression BDs queued on each busy queue ahead of the compression job
BUSY_QUEUES = 3
LATENCY_US = 50_000


def test_saturation_curve_flattens_at_the_pool_size(tmp_path: Path) -> None:
    """``warpzip bench device --saturation`` under a 20 ms modelled BD: each pool's throughput
    doubles from 1 to 2 BDs in flight (2 engines), and 8 in flight add nothing over 2 — the
    curve of a finite pool. The tool starts and stops its own device."""
    out = tmp_path / "curve.json"
    done = subprocess.run([sys.executable, "-m", "app", "bench", "device", "--saturation", "--comp-engines", "2",
                           "--decomp-engines", "2", "--bd-latency-us", "20000", "--inflight", "1,2,8",
                           "--seconds", "0.6", "--block-size", "4k", "--corpus-bytes", "256k", "--quiet",
                           "--json", str(out)], cwd=REPO, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["device"]["pools"] == {"compress": 2, "decompress": 2}
    for pool in ("compress", "decompress"):
        tput = {p["inflight"]: p["jobs_s"] for p in report["saturation"] if p["pool"] == pool}
        assert set(tput) == {1, 2, 8}
        assert tput[2] >= 1.6 * tput[1], f"{pool}: no rise up to the pool size: {tput}"
        assert tput[8] <= 1.25 * tput[2], f"{pool}: still rising past the pool size: {tput}"
        assert f"{pool} pool (2 engines)" in done.stdout
    lat = {p["inflight"]: p["avg_latency_us"] for p in report["saturation"] if p["pool"] == "compress"}
    assert lat[8] > 2 * lat[2], f"past the pool size BDs wait for an engine: {lat}"


def test_decompress_backlog_does_not_delay_compress(tmp_path: Path) -> None:
    """One engine per pool, 50 ms per BD, three decompression queues with a backlog each — more
    busy queues than the device has engines, so a shared pool would have none left: a compression
    job sent behind them completes while most of the backlog still waits, and the DFX rows show
    which pool's engine ran what."""
    plain = bytes(range(256)) * (BLOCK // 256)
    frame = zstandard.ZstdCompressor().compress(plain)
    space = loaded_space(16 * MIB, plain + frame)
    dev = start_device(tmp_path / "root", "--comp-engines", "1", "--decomp-engines", "1",
                       "--bd-latency-us", str(LATENCY_US))
    unzips = [RawQueue(dev.root, space, abi.QcType.DECOMPRESS) for _ in range(BUSY_QUEUES)]
    zip_q = RawQueue(dev.root, space, abi.QcType.COMPRESS)
    counters = dfx(dev.root)
    total = BUSY_QUEUES * BACKLOG
    try:
        for n, q in enumerate(unzips):
            for j in range(BACKLOG):
                q.write(BLOCK, len(frame), 2 * MIB + (n * BACKLOG + j) * BLOCK, BLOCK)
            q.doorbell()
        got = unzips[0].wait(1, timeout=10)  # the decompression engine is busy with the backlog
        zip_q.write(0, BLOCK, 4 * MIB, codec.compress_bound(BLOCK))
        zip_q.doorbell()
        (done,) = zip_q.wait(1, timeout=10)
        early = [q.poll() for q in unzips]
        early[0] = got + early[0]
        finished = sum(map(len, early))
        assert done.status == abi.Status.OK
        assert finished <= total // 2, f"the compression job waited for the decompression backlog ({finished} done)"
        results = [c for q, e in zip(unzips, early, strict=True) for c in e + q.wait(BACKLOG - len(e), timeout=30)]
        assert [c.status for c in results] == [abi.Status.OK] * total
        assert bytes(space.view[2 * MIB:2 * MIB + results[0].produced]) == plain
        comp_row, decomp_row = counters.engine(0), counters.engine(1)
        assert (int(comp_row[Engine.POOL]), int(decomp_row[Engine.POOL])) == (abi.QcType.COMPRESS,
                                                                              abi.QcType.DECOMPRESS)
        assert wait_for(lambda: (int(comp_row[Engine.JOBS]), int(decomp_row[Engine.JOBS])) == (1, total), 5)
        assert int(counters.queue(zip_q.sqn)[Queue.COMPLETED_OK]) == 1
    finally:
        for q in (*unzips, zip_q):
            q.close()
        counters.close()
        stop_process(dev.proc)


def test_info_names_each_engines_pool(tmp_path: Path) -> None:
    """``warpzip info``: engine ids run compression pool first, and each row says its pool."""
    dev = start_device(tmp_path / "root", "--comp-engines", "1", "--decomp-engines", "3")
    try:
        done = subprocess.run([sys.executable, "-m", "app", "info", "--root", str(dev.root), "--json"], cwd=REPO,
                              capture_output=True, text=True, timeout=30)
        text = subprocess.run([sys.executable, "-m", "app", "info", "--root", str(dev.root)], cwd=REPO,
                              capture_output=True, text=True, timeout=30)
    finally:
        stop_process(dev.proc)
    assert done.returncode == 0, done.stderr
    (device,) = json.loads(done.stdout)
    assert [(e["engine"], e["pool"]) for e in device["engines"]] == [
        (0, "compress"), (1, "decompress"), (2, "decompress"), (3, "decompress")]
    assert "engine 0 (compress)" in text.stdout and "engine 3 (decompress)" in text.stdout
