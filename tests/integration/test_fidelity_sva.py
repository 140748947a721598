"""SVA (reference §4, §7 items 4, 13, 14, 15): one PASID per process, two real processes that
cannot reach each other's pages, and memory pressure that takes pages away under running jobs."""

from __future__ import annotations

import errno
import json
import mmap
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from tests.harness import REPO, DeviceProc, device_cli, start_device
from tests.integration.fidelity import RawQueue, dfx, loaded_space, queue_and_counters
from warp import NoDevice, Runtime, abi, cdev, codec, devices
from warp.device.launch import stop_process
from warp.dfx import Dev, Dfx, Engine, Queue
from warp.iommu.fault import FaultCounter
from warp.sva import AddressSpace

MIB = 1 << 20

#: Process A: its own Runtime and queues; a secret in its heap; reports where, then waits.
OWNER = r"""
import json, sys
from pathlib import Path
from warp import Runtime, abi
rt = Runtime(Path(sys.argv[1]), driver="zip", heap_size=16 << 20)
secret = rt.load(b"A's secret page " * 256)
q = rt.zip.queues[abi.QcType.COMPRESS][0]
print(json.dumps({"pasid": q.handle.pasid, "addr": secret.address, "base": rt.space.base,
                  "size": rt.space.size, "sqn": q.handle.sqn}), flush=True)
sys.stdin.readline()
intact = bytes(secret.view[:4096]) == (b"A's secret page " * 256)
print(json.dumps({"intact": intact}), flush=True)
rt.close()
"""

#: Process B: forges SQEs whose source, then destination, is A's address.
FORGER = r"""
import json, sys
from pathlib import Path
from warp import Runtime, abi
from warp.drv.base import Job
rt = Runtime(Path(sys.argv[1]), driver="zip", heap_size=16 << 20)
target = int(sys.argv[2])
q = rt.zip.queues[abi.QcType.COMPRESS][0]
out = {"pasid": q.handle.pasid, "sqn": q.handle.sqn,
       "overlaps": rt.space.base <= target < rt.space.base + rt.space.size}
for forged in ("src", "dst"):
    src, dst = rt.load(b"B's own data " * 300), rt.alloc(8192)
    job = Job(direction=abi.QcType.COMPRESS, src=src, length=3900, dst=dst)
    (src if forged == "src" else dst).address = target  # a real pointer into A's heap
    rt.zip.run([job], timeout=10)
    out[forged] = {"status": job.status, "produced": job.produced,
                   "dst_leak": b"secret" in bytes(dst.view[:8192])}
    job.abandon()
print(json.dumps(out), flush=True)
rt.close()
"""


def python(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", script, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)


def test_two_processes_have_two_pasids_and_cannot_reach_each_other(device: DeviceProc) -> None:
    owner = python(OWNER, str(device.root))
    try:
        assert owner.stdout is not None and owner.stdin is not None
        line = owner.stdout.readline()
        assert line, owner.stderr.read() if owner.stderr else "owner died"
        a = json.loads(line)
        forger = subprocess.run([sys.executable, "-c", FORGER, str(device.root), str(a["addr"])],
                                capture_output=True, text=True, timeout=60, cwd=REPO)
        assert forger.returncode == 0, forger.stderr
        b = json.loads(forger.stdout)
        assert a["pasid"] != b["pasid"], "two processes (two mms) must get two PASIDs"
        assert not b["overlaps"], "A's address happens to lie in B's own heap; the test needs disjoint heaps"
        for forged in ("src", "dst"):
            assert b[forged]["status"] == abi.Status.ADDR_FAULT, f"forged {forged}: {b[forged]}"
            assert b[forged]["produced"] == 0 and not b[forged]["dst_leak"]
        owner.stdin.write("check\n")
        owner.stdin.flush()
        assert json.loads(owner.stdout.readline())["intact"], "B's forged write reached A's heap"
        counters = dfx(device.root)
        try:
            assert int(counters.faults[FaultCounter.PAGES_INVALID]) >= 2  # answered INVALID, as a bad address
            assert int(counters.queue(b["sqn"])[Queue.ERR_ADDR_FAULT]) == 2
            assert int(counters.queue(a["sqn"])[Queue.COMPLETED_ERR]) == 0
        finally:
            counters.close()
    finally:
        if owner.poll() is None:
            owner.kill()
        owner.wait(10)
        for stream in (owner.stdin, owner.stdout, owner.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def space(corpus: dict[str, Path]) -> Iterator[AddressSpace]:
    s = loaded_space(16 * MIB, corpus["xml"].read_bytes()[:MIB])
    yield s
    s.close()


def run_job(q: RawQueue, space: AddressSpace) -> int:
    """Compress the first MiB into the window at 2 MiB, check the frame; its size."""
    q.write(0, MIB, 2 * MIB, codec.compress_bound(MIB), level=1)
    q.doorbell()
    (done,) = q.wait(1)
    assert done.status == abi.Status.OK
    frame = bytes(space.view[2 * MIB:2 * MIB + done.produced])
    assert zstandard.ZstdDecompressor().decompress(frame) == bytes(space.view[:MIB]), "wrong result after refault"
    return done.produced


def busy_ns(counters: Dfx) -> int:
    return sum(int(counters.engine(eid)[Engine.BUSY_NS]) for eid in range(counters.engines))


def test_unprefaulted_buffers_run_several_times_slower(device: DeviceProc, space: AddressSpace) -> None:
    """§7 item 13 (reference ~3.6x): the same job on the same buffers, their pages taken away
    before one run and present before the next. Cold, the engine stalls at every page it
    touches — one page request each, LAST_PAGE, served by the handler thread: the source's 256
    pages and only the destination pages its output reaches — and its busy time per job is
    several times the warm one. A ratio measured in one run, never an absolute time."""
    data = bytes(space.view[:MIB])
    with queue_and_counters(device.root, space) as (q, counters):
        run_job(q, space)  # the engine's compression context exists from here on
        cold: list[int] = []
        warm: list[int] = []
        for _ in range(5):
            space.reclaim(0, 4 * MIB)  # swapped out: not present, the data kept
            requests, pages_ok, busy = (int(counters.faults[FaultCounter.REQUESTS]),
                                        int(counters.faults[FaultCounter.PAGES_OK]), busy_ns(counters))
            produced = run_job(q, space)
            cold.append(busy_ns(counters) - busy)
            touched = MIB // abi.PAGE_SIZE + -(-produced // abi.PAGE_SIZE)
            assert int(counters.faults[FaultCounter.REQUESTS]) - requests == touched, "one request per page touched"
            assert int(counters.faults[FaultCounter.PAGES_OK]) - pages_ok == touched
            space.write(0, data)  # the input as the CPU writes it, the output window prefaulted
            space.prefault(2 * MIB, 2 * MIB)
            requests, busy = int(counters.faults[FaultCounter.REQUESTS]), busy_ns(counters)
            run_job(q, space)
            warm.append(busy_ns(counters) - busy)
            assert int(counters.faults[FaultCounter.REQUESTS]) == requests, "a prefaulted job must not fault"
        ratio = statistics.median(cold) / statistics.median(warm)
        assert ratio > 1.5, f"un-prefaulted / prefaulted busy time {ratio:.2f} (cold {cold} ns, warm {warm} ns)"


def test_reclaim_simulator_faults_rise_and_results_stay_correct(tmp_path: Path, space: AddressSpace) -> None:
    """--reclaim-interval-ms/--reclaim-fraction: pages the device used are taken away between jobs
    (swap, migration); every job refaults some of them back and still computes the right frame."""
    dev = start_device(tmp_path / "root", "--reclaim-interval-ms", "5", "--reclaim-fraction", "0.5")
    with queue_and_counters(dev.root, space) as (q, counters):
        seen = []
        for _ in range(12):
            run_job(q, space)
            seen.append(int(counters.queue(q.sqn)[Queue.IOPF]))
            time.sleep(0.02)  # a few reclaim passes between jobs
        rises = sum(1 for before, after in zip(seen, seen[1:], strict=False) if after > before)
        assert rises >= 8, f"faults per job should keep rising under pressure: {seen}"
        assert int(counters.dev[Dev.RECLAIMED_PAGES]) > 0 and int(counters.dev[Dev.RECLAIM_PASSES]) > 10
        assert int(counters.faults[FaultCounter.PAGES_OK]) >= seen[-1]
        assert int(counters.faults[FaultCounter.PAGES_INVALID]) == 0
        assert int(counters.faults[FaultCounter.SERVICE_NS]) > 0  # each fault's service time is measured
        stop_process(dev.proc)


def test_without_pressure_a_warm_queue_does_not_fault(device: DeviceProc, space: AddressSpace) -> None:
    with queue_and_counters(device.root, space) as (q, counters):
        run_job(q, space)
        warm = int(counters.queue(q.sqn)[Queue.IOPF])
        for _ in range(5):
            run_job(q, space)
            time.sleep(0.02)
        assert int(counters.queue(q.sqn)[Queue.IOPF]) == warm
        # the same counter does move once the pages are taken away: it was live all along
        assert device_cli(device.root, "inject", "iopf-storm").returncode == 0
        run_job(q, space)
        assert int(counters.queue(q.sqn)[Queue.IOPF]) > warm


def test_iopf_storm_reclaims_everything_once(device: DeviceProc, space: AddressSpace) -> None:
    with queue_and_counters(device.root, space) as (q, counters):
        run_job(q, space)
        before = int(counters.queue(q.sqn)[Queue.IOPF])
        cli = device_cli(device.root, "inject", "iopf-storm")
        assert cli.returncode == 0, cli.stderr
        assert "pages" in cli.stdout
        assert int(counters.dev[Dev.RECLAIMED_PAGES]) >= (MIB + codec.compress_bound(MIB)) // abi.PAGE_SIZE
        run_job(q, space)
        after = int(counters.queue(q.sqn)[Queue.IOPF])
        assert after - before >= MIB // abi.PAGE_SIZE, "every source page must fault back in"
        run_job(q, space)
        assert int(counters.queue(q.sqn)[Queue.IOPF]) == after, "once faulted in, pages stay"


def test_an_unsealed_heap_is_refused_and_ours_cannot_be_truncated(device: DeviceProc) -> None:
    """Issue 15, item 2: a heap memfd its sender could shrink would let a client SIGBUS the device
    (for every client) by truncating it after the bind; the device refuses it with EPERM, and the
    heaps warp creates are sealed, so truncating them fails."""
    size = 1 << 20
    fds = [os.memfd_create("unsealed-heap", os.MFD_CLOEXEC), os.memfd_create("unsealed-pt", os.MFD_CLOEXEC)]
    os.ftruncate(fds[0], size)
    os.ftruncate(fds[1], size >> abi.PAGE_SHIFT)
    heap = mmap.mmap(fds[0], size)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
            sock.settimeout(5)
            sock.connect(str(cdev.DevicePaths(device.root, "warp_zip-0").chardev))
            cdev.send(sock, {"cmd": "open", "base": 0x7000_0000_0000, "size": size}, fds)
            received = cdev.receive(sock)
            assert received is not None
            with pytest.raises(OSError) as refused:
                cdev.raise_for_reply(received[0])
            assert refused.value.errno == errno.EPERM
    finally:
        heap.close()
        for fd in fds:
            os.close(fd)
    space = AddressSpace(size)
    try:
        for fd in (space.heap_fd, space.pt_fd):
            with pytest.raises(PermissionError):
                os.ftruncate(fd, 0)
    finally:
        space.close()
    assert attr_available(device) == "64"  # nothing was bound, and the device lives on


def attr_available(device: DeviceProc) -> str:
    return (device.root / "sys/class/uacce/warp_zip-0/available_instances").read_text().strip()


def test_without_negotiated_sva_the_device_has_no_flag_no_char_device_and_no_users(tmp_path: Path) -> None:
    """Reference §7 item 3: when the IOMMU cannot enable IOPF and SVA, ``uacce_alloc`` clears
    UACCE_DEV_SVA from the negotiated ``flags`` and the QM driver registers no char device; the
    library, which only speaks SVA, finds no device and the service's runtime runs on the cpu."""
    dev = start_device(tmp_path / "root", "--iommu-sva", "0")
    try:
        paths = cdev.DevicePaths(dev.root, "warp_zip-0")
        assert (paths.sysfs / "flags").read_text().strip() == "0"
        assert not paths.chardev.exists()
        assert devices(dev.root, "zstd") == []  # as wd.c skips it
        (listed,) = devices(dev.root, "zstd", every=True)  # `warpzip info` still shows it
        assert listed.flags == 0
        with pytest.raises(NoDevice):
            Runtime(dev.root, driver="zip", heap_size=4 << 20)
        with Runtime(dev.root, driver="auto", heap_size=4 << 20) as rt:
            assert rt.driver.name == "cpu"
            assert zstandard.decompress(rt.compress(b"no sva " * 100)) == b"no sva " * 100
    finally:
        stop_process(dev.proc)
    with_sva = start_device(tmp_path / "other", "--iommu-sva", "1")
    try:  # the same flag on: the device is there for the library
        assert (cdev.DevicePaths(with_sva.root, "warp_zip-0").sysfs / "flags").read_text().strip() == "1"
        assert [d.name for d in devices(with_sva.root, "zstd")] == ["warp_zip-0"]
    finally:
        stop_process(with_sva.proc)
