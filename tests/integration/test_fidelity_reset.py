"""Reset and isolation as qm.c and the isolation patch do them, and the AEQ (reference §1.5, §2.6,
§4.3, §7 item 16): a controller reset stops every queue for good (only a new queue starts clean),
hardware errors reset the controller by themselves, each reset-prepare counts toward
``isolate_strategy``, a failed reset isolates, no reset clears isolation (a new device instance
does), and each AEQ event type has its effect and its DFX count."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.dfx_collector import AcceleratorCollector
from tests.harness import REPO, DeviceProc, device_cli, start_device
from tests.integration.fidelity import (
    RawFile,
    RawQueue,
    attr,
    dfx,
    errno_name,
    paths,
    resets_reach,
    run_fresh,
    run_one,
    wait_for,
)
from warp import abi, devices
from warp.device.engine import DRAIN_STALL_S
from warp.device.launch import stop_process
from warp.dfx import Dev, Dfx
from warp.sva import AddressSpace

MIB = 1 << 20


@pytest.fixture
def space() -> Iterator[AddressSpace]:
    s = AddressSpace(4 * MIB)
    s.write(0, b"reset path " * 400)
    s.prefault(MIB, MIB)
    yield s
    s.close()


@pytest.fixture
def counters(device: DeviceProc) -> Iterator[Dfx]:
    c = dfx(device.root)
    yield c
    c.close()



def stopped(q: RawQueue) -> bool:
    return q.handle.view.tx_stopped and q.handle.view.rx_stopped


def set_strategy(root: Path, counters: Dfx, threshold: int) -> None:
    (paths(root).sysfs / "isolate_strategy").write_text(f"{threshold}\n")
    assert wait_for(lambda: int(counters.dev[Dev.ISOLATE_STRATEGY]) == threshold, 5)


def test_a_reset_stops_every_queue_for_good_and_only_a_new_queue_starts_clean(
        device: DeviceProc, space: AddressSpace, counters: Dfx) -> None:
    """``hisi_qm_stop(QM_SOFT_RESET)``: TX flag on every queue, the started ones stopped, RX flag
    on every queue — and the flags stay set after the QM restarts; the queue fetches nothing
    more. ``get_queue`` gives a new queue clear flags (``hisi_qm_unset_hw_reset``)."""
    root = device.root
    first, second = RawQueue(root, space), RawQueue(root, space)
    try:
        assert run_one(first) == abi.Status.OK
        cli = device_cli(root, "reset")
        assert cli.returncode == 0, cli.stderr
        assert "reset (#1)" in cli.stdout and "isolated" not in cli.stdout
        assert stopped(first) and stopped(second)
        assert first.irq_pending() >= 1, "a sleeping user is woken to find its flags"
        assert int(counters.dev[Dev.RESETS]) == 1 and int(counters.dev[Dev.QM_STOPPED]) == 0
        first.write(0, 4000, MIB, 8192, level=1)
        first.doorbell()
        time.sleep(0.3)
        assert first.poll() == [], "a stopped queue fetches nothing after the reset"
        assert stopped(first) and stopped(second), "the reset is over and the flags are still set"
        assert attr(root, "isolate") == "0" and len(devices(root, "zstd")) == 1
        assert run_fresh(root, space) == abi.Status.OK
    finally:
        first.close()
        second.close()


def test_a_hardware_error_resets_the_controller_without_an_operator(
        device: DeviceProc, space: AddressSpace, counters: Dfx) -> None:
    """The abnormal interrupt schedules ``rst_work``: the job fails ``HW_ERROR``, and every
    queue — not only the one that hit the error — is stopped by the reset that follows."""
    root = device.root
    q, bystander = RawQueue(root, space), RawQueue(root, space)
    try:
        assert device_cli(root, "inject", "hw-error").returncode == 0
        before = time.time_ns()
        assert run_one(q) == abi.Status.HW_ERROR
        assert wait_for(lambda: int(counters.dev[Dev.RESETS]) == 1, 5)
        assert wait_for(lambda: stopped(q) and stopped(bystander), 5)
        assert int(counters.dev[Dev.HW_ERRORS]) == 1
        assert before <= int(counters.dev[Dev.LAST_HW_ERROR_NS]) <= time.time_ns()
        assert run_fresh(root, space) == abi.Status.OK
        assert int(counters.dev[Dev.RESETS]) == 1, "one error, one reset"
    finally:
        q.close()
        bystander.close()


def test_resets_count_toward_isolation_and_no_reset_clears_it(
        device: DeviceProc, space: AddressSpace, counters: Dfx, tmp_path: Path) -> None:
    """``qm_hw_err_isolate`` in reset-prepare: with ``isolate_strategy`` 2 the third reset in the
    hour isolates. Isolation then holds through a manual reset; the kernel refuses neither open
    nor START_Q, so a queue opened anyway runs. Only a new probe of the driver — here, a new
    device process on the root — starts without it."""
    root = device.root
    set_strategy(root, counters, 2)
    assert device_cli(root, "inject", "hw-error", "--count", "3").returncode == 0
    for n in (1, 2):
        assert run_fresh(root, space) == abi.Status.HW_ERROR
        assert wait_for(resets_reach(counters, n), 5)
        assert attr(root, "isolate") == "0", f"{n} reset(s) in the hour: not more than isolate_strategy=2"
    assert run_fresh(root, space) == abi.Status.HW_ERROR
    assert wait_for(lambda: attr(root, "isolate") == "1", 5)
    assert int(counters.dev[Dev.ISOLATED]) == 1 and int(counters.dev[Dev.ISOLATIONS]) == 1
    assert int(counters.dev[Dev.HW_ERRORS_WINDOW]) == 3 and int(counters.dev[Dev.RESETS]) == 3
    assert devices(root, "zstd") == [], "discovery skips an isolated device"
    cli = device_cli(root, "reset")
    assert cli.returncode == 0, cli.stderr
    assert "still isolated" in cli.stdout
    assert attr(root, "isolate") == "1" and int(counters.dev[Dev.ISOLATED]) == 1
    assert int(counters.dev[Dev.HW_ERRORS_WINDOW]) == 3, "reset-prepare counts nothing while isolated"
    assert int(counters.dev[Dev.ISOLATIONS]) == 1
    (paths(root).sysfs / "isolate_strategy").write_text("9\n")  # EPERM while isolated: restored
    assert wait_for(lambda: attr(root, "isolate_strategy") == "2", 5)
    assert run_fresh(root, space) == abi.Status.OK, "isolation is for user space: the kernel checks nothing"
    stop_process(device.proc)
    again = start_device(root)
    try:
        assert attr(root, "isolate") == "0" and len(devices(root, "zstd")) == 1
        assert run_fresh(root, space) == abi.Status.OK
    finally:
        stop_process(again.proc)


def test_a_failed_reset_isolates_and_leaves_the_qm_stopped(
        device: DeviceProc, space: AddressSpace, counters: Dfx) -> None:
    """``qm_controller_reset`` failing: the device is isolated (without any threshold) and the QM
    is not restarted, so creating a queue fails with EPERM. A later reset that succeeds restarts
    the QM — and the device stays isolated."""
    root = device.root
    q = RawQueue(root, space)
    try:
        cli = device_cli(root, "inject", "reset-fail")
        assert cli.returncode == 0, cli.stderr
        assert int(counters.dev[Dev.RESET_FAILS_PENDING]) == 1
        cli = device_cli(root, "reset")
        assert cli.returncode == 1 and "EIO" in cli.stderr
        assert stopped(q), "the prepare stopped every queue before the reset failed"
        assert attr(root, "isolate") == "1" and int(counters.dev[Dev.ISOLATIONS]) == 1
        assert int(counters.dev[Dev.RESET_FAILURES]) == 1 and int(counters.dev[Dev.RESET_FAILS_PENDING]) == 0
        assert int(counters.dev[Dev.QM_STOPPED]) == 1
        assert int(counters.dev[Dev.ISOLATE_STRATEGY]) == 0, "a failed reset isolates whatever the threshold"
        late = RawFile(root)
        try:
            with pytest.raises(OSError) as refused:
                late.open(space)
            assert errno_name(refused.value) == "EPERM"
        finally:
            late.close()
        assert device_cli(root, "reset").returncode == 0
        assert int(counters.dev[Dev.QM_STOPPED]) == 0 and attr(root, "isolate") == "1"
        assert run_fresh(root, space) == abi.Status.OK
    finally:
        q.close()


def test_a_failed_drain_is_a_hardware_error_that_counts_toward_isolation(
        device: DeviceProc, space: AddressSpace, counters: Dfx) -> None:
    """A hung engine failing ``qm_drain_qp`` is a hardware error: counted, and its reset counts
    in the window like any other — with ``isolate_strategy`` 1 the second reset isolates."""
    root = device.root
    set_strategy(root, counters, 1)
    assert device_cli(root, "inject", "hw-error").returncode == 0
    assert run_fresh(root, space) == abi.Status.HW_ERROR
    assert wait_for(lambda: int(counters.dev[Dev.RESETS]) == 1, 5)
    assert attr(root, "isolate") == "0"
    q = RawQueue(root, space)
    try:
        assert device_cli(root, "inject", "hang").returncode == 0
        q.write(0, 4000, MIB, 8192, level=1)
        q.doorbell()
        started = time.monotonic()
        q.handle.put()  # the drain fails after DRAIN_STALL_S: a hardware error, a reset
        assert time.monotonic() - started >= DRAIN_STALL_S
    finally:
        q.close()
    assert int(counters.dev[Dev.HW_ERRORS]) == 2 and int(counters.dev[Dev.RESETS]) == 2
    assert attr(root, "isolate") == "1" and int(counters.dev[Dev.HW_ERRORS_WINDOW]) == 2


def test_a_cqe_error_disables_only_its_queue(device: DeviceProc, space: AddressSpace, counters: Dfx) -> None:
    """AEQE ``QM_CQE_ERROR``: ``qm_disable_qp`` — TX flag, stop, RX flag on that queue alone; no
    reset, nothing counted toward isolation. An event naming a queue nobody holds changes nothing."""
    root = device.root
    victim, other = RawQueue(root, space), RawQueue(root, space)
    try:
        cli = device_cli(root, "inject", "cqe-error", "--qp", str(victim.sqn))
        assert cli.returncode == 0, cli.stderr
        assert wait_for(lambda: stopped(victim), 5)
        assert wait_for(lambda: int(counters.dev[Dev.QPS_DISABLED]) == 1, 5)
        assert int(counters.dev[Dev.AEQ_CQE_ERROR]) == 1
        assert not other.handle.view.tx_stopped and not other.handle.view.rx_stopped
        assert run_one(other) == abi.Status.OK
        victim.write(0, 4000, MIB, 8192, level=1)
        victim.doorbell()
        time.sleep(0.2)
        assert victim.poll() == []
        free = max(victim.sqn, other.sqn) + 10
        assert device_cli(root, "inject", "cqe-error", "--qp", str(free)).returncode == 0
        assert wait_for(lambda: int(counters.dev[Dev.AEQ_CQE_ERROR]) == 2, 5)
        assert int(counters.dev[Dev.QPS_DISABLED]) == 1 and run_one(other) == abi.Status.OK
        assert int(counters.dev[Dev.RESETS]) == 0 and int(counters.dev[Dev.HW_ERRORS_WINDOW]) == 0
        shown = subprocess.run([sys.executable, "-m", "app", "info", "--root", str(root), "--json"], cwd=REPO,
                               capture_output=True, text=True, timeout=30)
        (listed,) = json.loads(shown.stdout)
        assert listed["errors"]["aeq_cqe_error"] == 2 and listed["errors"]["qps_disabled"] == 1, "warpzip info"
        scraped = {(m.name, s.labels.get("type")): s.value for m in AcceleratorCollector(paths(root)).collect()
                   for s in m.samples if m.name == "warpzip_device_aeq_events"}
        assert scraped[("warpzip_device_aeq_events", "cqe_error")] == 2, "the Prometheus collector"
        assert scraped[("warpzip_device_aeq_events", "cq_overflow")] == 0
    finally:
        victim.close()
        other.close()


def test_an_eq_overflow_resets_the_function(device: DeviceProc, space: AddressSpace, counters: Dfx) -> None:
    """AEQE ``QM_EQ_OVERFLOW``: ``qm_reset_function`` stops every queue (flags for good, as a
    controller reset) but is no controller reset: not counted toward isolation, even at 1."""
    root = device.root
    set_strategy(root, counters, 1)
    first, second = RawQueue(root, space), RawQueue(root, space)
    try:
        for _ in range(2):
            assert device_cli(root, "inject", "eq-overflow").returncode == 0
            assert wait_for(lambda: stopped(first) and stopped(second), 5)
        assert wait_for(lambda: int(counters.dev[Dev.FUNCTION_RESETS]) == 2, 5)
        assert int(counters.dev[Dev.AEQ_EQ_OVERFLOW]) == 2
        assert int(counters.dev[Dev.RESETS]) == 0 and int(counters.dev[Dev.HW_ERRORS_WINDOW]) == 0
        assert attr(root, "isolate") == "0"
        assert run_fresh(root, space) == abi.Status.OK
    finally:
        first.close()
        second.close()


def test_an_eq_overflow_restarts_a_qm_a_failed_reset_left_stopped(
        device: DeviceProc, space: AddressSpace, counters: Dfx) -> None:
    """``qm_reset_function`` ends in ``hisi_qm_start``: the QM runs again after a failed controller
    reset left it stopped — and the device stays isolated."""
    root = device.root
    assert device_cli(root, "inject", "reset-fail").returncode == 0
    assert device_cli(root, "reset").returncode == 1
    assert int(counters.dev[Dev.QM_STOPPED]) == 1
    assert device_cli(root, "inject", "eq-overflow").returncode == 0
    assert wait_for(lambda: int(counters.dev[Dev.FUNCTION_RESETS]) == 1, 5)
    assert int(counters.dev[Dev.QM_STOPPED]) == 0 and attr(root, "isolate") == "1"
    assert run_fresh(root, space) == abi.Status.OK


@pytest.mark.parametrize("argv", [("cqe-error",), ("cqe-error", "--qp", "65536"), ("reset-fail", "--count", "0")])
def test_aeq_and_reset_injections_are_validated(device: DeviceProc, argv: tuple[str, ...]) -> None:
    """Refused by the CLI (a missing --qp) or by the device (EINVAL), never a crash."""
    cli = device_cli(device.root, "inject", *argv)
    assert cli.returncode != 0
    assert "EINVAL" in cli.stderr or "required" in cli.stderr
    assert device.proc.poll() is None
