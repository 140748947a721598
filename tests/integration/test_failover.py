"""The library keeps every job through device trouble: hardware errors and a stopped (isolated)
queue re-run on the cpu driver with correct results, and no job waits for its timeout."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator

import pytest
import zstandard
from fidelity import device_cli, wait_for

from tests.conftest import DeviceProc
from warp import Runtime
from warp.cdev import DevicePaths


@pytest.fixture
def runtime(device: DeviceProc) -> Iterator[Runtime]:
    rt = Runtime(device.root, driver="zip", heap_size=64 << 20, timeout=20)
    yield rt
    rt.close()


def compress_all(rt: Runtime, bodies: list[bytes]) -> list[bytes]:
    async def main() -> list[bytes]:
        comp = rt.compressor(3)
        results = await asyncio.gather(*(comp.acompress(b) for b in bodies))
        out = [bytes(r.view) for r in results]
        for r in results:
            r.release()
        return out

    return asyncio.run(main())


def test_hardware_errors_are_rerun_on_the_cpu(device: DeviceProc, runtime: Runtime) -> None:
    assert device_cli(device.root, "inject", "hw-error", "--count", "5").returncode == 0
    bodies = [os.urandom(100) * (i + 1) for i in range(20)]
    frames = compress_all(runtime, bodies)
    assert [zstandard.decompress(f) for f in frames] == bodies
    assert runtime.fallback_jobs == 5  # exactly the failed ones, each re-run once
    assert runtime.driver.name == "zip"  # errors below the isolation threshold keep the device


def test_isolation_fails_over_at_once(device: DeviceProc, runtime: Runtime) -> None:
    strategy = DevicePaths(device.root, "warp_zip-0").sysfs / "isolate_strategy"
    strategy.write_text("1\n")
    assert wait_for(lambda: device_cli(device.root, "inject", "hw-error", "--count", "2").returncode == 0)
    started = time.monotonic()
    bodies = [os.urandom(50) * (i + 2) for i in range(30)]
    frames = compress_all(runtime, bodies)  # two hit the errors; the device isolates itself
    assert [zstandard.decompress(f) for f in frames] == bodies
    assert wait_for(lambda: (DevicePaths(device.root, "warp_zip-0").sysfs / "isolate").read_text().strip() == "1")
    again = compress_all(runtime, bodies[:5])  # now on the cpu driver, without waiting for timeouts
    assert [zstandard.decompress(f) for f in again] == bodies[:5]
    assert runtime.driver.name == "cpu"
    assert time.monotonic() - started < 10, "a stopped queue must fail over, not time out"
