"""The failover policy (warp/failover.py), without a device: which jobs re-run on the cpu, what a
timeout costs by where the job runs, and when the device is looked for again — backing off only
while it takes connections without answering, on an injected clock."""

from __future__ import annotations

import pytest

from tests.harness.clock import FakeClock
from warp import abi
from warp.failover import PROBE_BACKOFF_MAX, PROBE_INTERVAL, Expiry, Failover, Probe


@pytest.mark.parametrize("status", [abi.Status.HW_ERROR, abi.Status.NO_CTX_MEMORY])
def test_a_job_the_device_let_down_reruns_on_the_cpu(status: abi.Status) -> None:
    """A hardware error, or a job over one BD whose stream context the device had no room for (the
    cpu runs it whole, with no stream context)."""
    assert Failover.rerun(status, lost=False)


@pytest.mark.parametrize("status", sorted(set(abi.Status) - {abi.Status.HW_ERROR, abi.Status.NO_CTX_MEMORY}))
def test_a_job_that_ended_on_its_own_input_does_not_rerun(status: abi.Status) -> None:
    assert not Failover.rerun(status, lost=False)


def test_a_lost_job_reruns_whatever_status_it_has() -> None:
    assert Failover.rerun(-1, lost=True)  # the queue never took it
    assert Failover.rerun(abi.Status.OK, lost=True)


def test_a_timeout_resets_the_device_in_use_fails_on_the_cpu_and_waits_on_a_reset_under_way() -> None:
    assert Failover.expiry(on_cpu=False, on_device_in_use=True) is Expiry.RESET
    assert Failover.expiry(on_cpu=True, on_device_in_use=False) is Expiry.FAIL
    assert Failover.expiry(on_cpu=False, on_device_in_use=False) is Expiry.WAIT


def test_the_first_probe_is_due_at_once() -> None:
    assert Failover(FakeClock()).probe_due()


def test_a_device_that_does_not_answer_is_probed_with_doubling_waits_up_to_the_maximum() -> None:
    clock = FakeClock()
    failover = Failover(clock)
    waits = []
    for _ in range(8):
        failover.probed(Probe.HUNG)
        waits.append(failover.interval)
        clock.now += failover.interval - 0.01
        assert not failover.probe_due()
        clock.now += 0.01
        assert failover.probe_due()
    assert waits == [2.0, 4.0, 8.0, 16.0, PROBE_BACKOFF_MAX, PROBE_BACKOFF_MAX, PROBE_BACKOFF_MAX, PROBE_BACKOFF_MAX]
    failover.probed(Probe.FOUND)
    assert failover.interval == PROBE_INTERVAL


def test_an_absent_device_is_looked_for_every_interval_and_ends_a_backoff() -> None:
    clock = FakeClock()
    failover = Failover(clock)
    failover.probed(Probe.HUNG)
    failover.probed(Probe.HUNG)
    failover.probed(Probe.ABSENT)  # refused at once: restarting, so it is back soon
    assert failover.interval == PROBE_INTERVAL
    clock.now += PROBE_INTERVAL
    assert failover.probe_due()


def test_a_device_that_just_failed_a_job_gets_an_interval_before_the_next_probe() -> None:
    clock = FakeClock()
    failover = Failover(clock)
    failover.postpone()
    assert not failover.probe_due()
    clock.now += PROBE_INTERVAL
    assert failover.probe_due()
