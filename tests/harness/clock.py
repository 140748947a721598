"""A clock a test moves by hand, for the sans-I/O policies that take one (``warp.failover``, the
device's ``ErrorLog``): ``clock.now += 5`` is five seconds later, instantly."""

from __future__ import annotations

from typing import final


@final
class FakeClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
