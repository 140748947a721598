"""The device prober (warp/probe.py): at most one probe per interval, doubling while the device
does not answer, back to the interval once it does; from an event loop the probe runs in a thread
and its driver is taken later; nothing a probe opens after the runtime closed is kept."""

from __future__ import annotations

import threading
import time
from typing import Any, cast

from tests.harness.clock import FakeClock
from warp.errors import NoDevice
from warp.failover import PROBE_BACKOFF_MAX, PROBE_INTERVAL, Failover
from warp.probe import Prober


class FakeDriver:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


class Device:
    """``open`` answers as told: a driver, or NoDevice; optionally it blocks until released."""

    def __init__(self, down: type[Exception] = NoDevice) -> None:
        self.up = False
        self.down = down
        self.calls = 0
        self.gate = threading.Event()
        self.gate.set()

    def open(self) -> Any:
        self.calls += 1
        self.gate.wait(10)
        if not self.up:
            raise self.down("down")
        return FakeDriver()


def test_a_device_that_does_not_answer_is_probed_with_backoff_and_an_answer_resets_it() -> None:
    device, clock = Device(down=TimeoutError), FakeClock()
    prober = Prober(device.open, Failover(clock))
    assert prober.take(background=False) is None and device.calls == 1
    waits = []
    for _ in range(8):
        waits.append(prober.interval)
        assert prober.take(background=False) is None  # not due yet: no probe
        clock.now += prober.interval
        prober.take(background=False)
    assert device.calls == 9
    assert waits[:4] == [2 * PROBE_INTERVAL, 4 * PROBE_INTERVAL, 8 * PROBE_INTERVAL, 16 * PROBE_INTERVAL]
    assert max(waits) == PROBE_BACKOFF_MAX
    device.up = True
    clock.now += prober.interval
    assert isinstance(prober.take(background=False), FakeDriver)
    assert prober.interval == PROBE_INTERVAL


def test_an_absent_or_restarting_device_is_looked_for_every_interval() -> None:
    device, clock = Device(down=NoDevice), FakeClock()
    prober = Prober(device.open, Failover(clock))
    for _ in range(5):
        assert prober.take(background=False) is None
        assert prober.interval == PROBE_INTERVAL
        clock.now += PROBE_INTERVAL
    assert device.calls == 5


def test_a_background_probe_never_makes_the_caller_wait_and_is_taken_later() -> None:
    device = Device()
    device.up = True
    device.gate.clear()  # a device that takes its time to answer
    prober = Prober(device.open)
    started = time.monotonic()
    assert prober.take(background=True) is None
    assert prober.take(background=True) is None  # one probe at a time
    assert time.monotonic() - started < 0.5 and device.calls == 1
    device.gate.set()
    deadline = time.monotonic() + 5
    found = None
    while found is None and time.monotonic() < deadline:
        found = prober.take(background=True)
        time.sleep(0.01)
    assert isinstance(found, FakeDriver)


def test_what_a_probe_opens_after_close_is_put_back() -> None:
    device = Device()
    device.up = True
    device.gate.clear()
    opened: list[FakeDriver] = []

    def open_and_keep() -> Any:
        driver = cast(FakeDriver, device.open())
        opened.append(driver)
        return driver

    prober = Prober(open_and_keep)
    assert prober.take(background=True) is None
    prober.close()
    device.gate.set()
    deadline = time.monotonic() + 5
    while not (opened and opened[0].closed) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert opened and opened[0].closed
    assert prober.take(background=True) is None
