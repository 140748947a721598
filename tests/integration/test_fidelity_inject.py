"""Fault injection through the control socket (``python -m warp.device inject|reset``, also
``warpzip device ...``): hang, slow, crash, and the refusals."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import REPO, DeviceProc, device_cli, start_device
from tests.integration.fidelity import RawQueue, dfx, loaded_space, paths, queue_and_counters, wait_for
from warp import abi, codec
from warp.device.engine import DRAIN_STALL_S
from warp.device.launch import stop_process
from warp.dfx import Dev, Engine, Queue
from warp.sva import AddressSpace

MIB = 1 << 20


@pytest.fixture
def space(corpus: dict[str, Path]) -> Iterator[AddressSpace]:
    s = loaded_space(8 * MIB, corpus["dickens"].read_bytes()[:MIB])
    yield s
    s.close()


def submit(q: RawQueue, count: int = 1, size: int = 4096, level: int = 1) -> None:
    for _ in range(count):
        q.write(0, size, 2 * MIB, codec.compress_bound(size), level=level)
    q.doorbell()


def test_control_socket_is_owner_only(device: DeviceProc) -> None:
    ctl = paths(device.root).control
    assert ctl.is_socket() and ctl.stat().st_mode & 0o777 == 0o600


def test_cli_without_a_running_device(tmp_path: Path) -> None:
    cli = device_cli(tmp_path, "reset")
    assert cli.returncode == 1 and "no device is running" in cli.stderr


@pytest.mark.parametrize("argv", [
    ("inject", "slow", "--factor", "0.5"),
    ("inject", "slow", "--factor", "1e9"),
    ("inject", "hw-error", "--count", "0"),
    ("inject", "hang", "--seconds", "-1"),
])
def test_invalid_injections_are_refused(device: DeviceProc, argv: tuple[str, ...]) -> None:
    cli = device_cli(device.root, *argv)
    assert cli.returncode == 1 and "EINVAL" in cli.stderr
    counters = dfx(device.root)
    try:
        assert int(counters.dev[Dev.INJECTIONS]) == 0
    finally:
        counters.close()


def test_hang_for_seconds_keeps_jobs_in_the_sq(device: DeviceProc, space: AddressSpace) -> None:
    with queue_and_counters(device.root, space) as (q, counters):
        cli = device_cli(device.root, "inject", "hang", "--seconds", "1.0")
        injected = time.monotonic()
        assert cli.returncode == 0, cli.stderr
        assert int(counters.dev[Dev.HUNG]) == 1
        submit(q, 3)
        time.sleep(0.4)
        assert q.poll() == [], "a hung engine fetches nothing"
        got = q.wait(3, timeout=10)
        assert [c.status for c in got] == [abi.Status.OK] * 3
        assert time.monotonic() - injected >= 0.9
        assert wait_for(lambda: int(counters.dev[Dev.HUNG]) == 0, 2)


def test_hang_then_put_q_fails_the_drain_and_resets(device: DeviceProc, space: AddressSpace) -> None:
    """A hung engine cannot drain (``qm_drain_qp`` times out): PUT_Q is a hardware error that
    takes the controller reset path, not a flush — the unfetched SQEs get no CQE at all."""
    with queue_and_counters(device.root, space) as (q, counters):
        assert device_cli(device.root, "inject", "hang").returncode == 0
        submit(q, 5)
        time.sleep(0.5)
        assert q.poll() == []
        started = time.monotonic()
        q.handle.put()  # the queue stops while its jobs wait in the SQ of a hung device
        assert time.monotonic() - started >= DRAIN_STALL_S, "PUT_Q returned before the drain failed"
        assert int(counters.dev[Dev.RESETS]) == 1
        assert int(counters.dev[Dev.HUNG]) == 0
        assert int(counters.queue(q.sqn)[Queue.FLUSHED]) == 5
        time.sleep(0.3)
        assert q.poll() == [], "a stop whose drain failed must not complete the unfetched SQEs"
        fresh = RawQueue(device.root, space)
        try:
            submit(fresh)
            assert [c.status for c in fresh.wait(1)] == [abi.Status.OK]
        finally:
            fresh.close()


def test_hang_mid_batch_stops_fetching(device: DeviceProc, space: AddressSpace) -> None:
    """A hang injected while an engine is inside a batch takes effect at the next job boundary;
    a reset ends it (and stops the queue: a new one runs)."""
    q = RawQueue(device.root, space)
    try:
        submit(q, 20, size=MIB, level=12)  # ~20 ms each, one batch
        got = q.wait(1)
        assert device_cli(device.root, "inject", "hang").returncode == 0
        time.sleep(0.2)
        got += q.poll()  # the job running when the hang came finishes
        time.sleep(0.4)
        assert q.poll() == [], "jobs still completing during the hang"
        assert len(got) < 20
        assert device_cli(device.root, "reset").returncode == 0  # ends the hang, and stops the queue for good
        time.sleep(0.3)
        assert q.poll() == [], "the jobs that waited in the SQ are not fetched after the reset"
        assert q.handle.view.tx_stopped and q.handle.view.rx_stopped
        assert [c.slot for c in got] == list(range(len(got))) and all(c.status == abi.Status.OK for c in got)
        fresh = RawQueue(device.root, space)
        try:
            submit(fresh)
            assert [c.status for c in fresh.wait(1)] == [abi.Status.OK], "a new queue runs: the hang is over"
        finally:
            fresh.close()
    finally:
        q.close()


def engine_ns_per_job(root: Path, q: RawQueue, jobs: int) -> float:
    counters = dfx(root)
    try:
        e = counters.engine(0)
        busy, done = int(e[Engine.BUSY_NS]), int(e[Engine.JOBS])
        for _ in range(jobs):
            submit(q, 1, size=MIB, level=3)
            assert [c.status for c in q.wait(1)] == [abi.Status.OK]
        return (int(e[Engine.BUSY_NS]) - busy) / (int(e[Engine.JOBS]) - done)
    finally:
        counters.close()


def test_slow_factor_stretches_every_job(device: DeviceProc, space: AddressSpace) -> None:
    q = RawQueue(device.root, space)
    try:
        engine_ns_per_job(device.root, q, 3)  # warm the contexts
        normal = engine_ns_per_job(device.root, q, 8)
        cli = device_cli(device.root, "inject", "slow", "--factor", "5")
        assert cli.returncode == 0, cli.stderr
        slowed = engine_ns_per_job(device.root, q, 8)
        assert slowed / normal >= 3, f"factor 5 gave {slowed / normal:.1f}x"
        assert device_cli(device.root, "reset").returncode == 0
        q.close()
        q = RawQueue(device.root, space)  # the reset stopped the old queue for good
        again = engine_ns_per_job(device.root, q, 8)
        assert again / normal < 2.5, f"after reset still {again / normal:.1f}x"
    finally:
        q.close()


def test_crash_exits_with_status_70(tmp_path: Path) -> None:
    dev = start_device(tmp_path / "root")
    try:
        cli = device_cli(dev.root, "inject", "crash")
        assert cli.returncode == 0, cli.stderr
        assert dev.proc.wait(10) == 70
    finally:
        stop_process(dev.proc)


def test_warpzip_device_forwards_the_subcommands(device: DeviceProc) -> None:
    out = subprocess.run([sys.executable, "-m", "app", "device", "reset", "--root", str(device.root), "--json"],
                         capture_output=True, text=True, timeout=30, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert '"resets": 1' in out.stdout
