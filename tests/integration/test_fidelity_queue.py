"""Queue state machine completeness (reference §1.3, §7 items 2, 7, 16): a stopped queue drains
(every doorbelled job completes with its real result), a full SQ is refused and counted, a CQ the
consumer never returns overflows and disables the queue, a forked child cannot map an inherited
queue again."""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from tests.harness import DeviceProc, start_device
from tests.integration.fidelity import RawFile, RawQueue, attr, dfx, queue_and_counters, wait_for
from warp import abi, codec
from warp.device.launch import stop_process
from warp.dfx import Dev, Queue
from warp.ring import RingFull
from warp.sva import AddressSpace

MIB = 1 << 20
JOBS = 8  # ~2 s of level-19 work: PUT_Q must answer within CONTROL_TIMEOUT (5 s) on a loaded machine too


@pytest.fixture
def space() -> Iterator[AddressSpace]:
    s = AddressSpace(8 * MIB)
    yield s
    s.close()


@pytest.mark.parametrize("how", ["put_q", "close"])
def test_stop_with_slow_jobs_in_flight_drains_every_one(device: DeviceProc, space: AddressSpace,
                                                        corpus: dict[str, Path], how: str) -> None:
    """8 level-19 1 MiB jobs doorbelled, the queue stopped while the first runs: the stop drains
    (``qm_drain_qp``) — every job completes with its real result, in SQ order, before PUT_Q
    returns; nothing is flushed and nothing vanishes."""
    data = corpus["xml"].read_bytes()[:MIB]
    space.write(0, data)
    dst, capacity = 2 * MIB, codec.compress_bound(MIB)
    space.prefault(dst, capacity)
    q = RawQueue(device.root, space)
    counters = dfx(device.root)
    row = counters.queue(q.sqn)
    try:
        for _ in range(JOBS):
            q.write(0, MIB, dst, capacity, level=19)
        q.doorbell()
        assert wait_for(lambda: int(row[Queue.DOORBELLS]) > 0, 10)  # counted as the engine takes the queue
        time.sleep(0.05)  # the engine is inside the first job
        if how == "put_q":
            q.handle.put()  # returns once the queue is drained and stopped
            got = q.poll()
            assert len(got) == JOBS, f"{len(got)} of {JOBS} jobs completed when PUT_Q returned: no drain"
        else:
            q.handle.sock.close()  # close(): the device releases the queue on its own time
            got = q.wait(JOBS, timeout=60)
            assert len(got) == JOBS, f"only {len(got)} of {JOBS} jobs completed: a stop lost jobs"
        assert [c.slot for c in got] == list(range(JOBS)), "completions must come in SQ order"
        assert [c.status for c in got] == [abi.Status.OK] * JOBS
        for c in (got[0], got[-1]):
            assert zstandard.ZstdDecompressor().decompress(bytes(space.view[dst:dst + c.produced])) == data
        assert wait_for(lambda: int(row[Queue.STATE]) == 0)  # released either way (put or close)
        assert int(row[Queue.SUBMITTED]) == int(row[Queue.COMPLETED_OK]) == JOBS
        assert int(row[Queue.FLUSHED]) == 0 and int(row[Queue.SQ_PENDING]) == 0
        assert int(counters.dev[Dev.RESETS]) == 0
        assert wait_for(lambda: attr(device.root, "available_instances") == "64")
    finally:
        counters.close()
        q.close()


def test_full_sq_is_refused_and_counted_as_send_busy(device: DeviceProc, space: AddressSpace) -> None:
    """One slot stays empty: the 1024th push is refused (RingFull = UADK -EBUSY), never
    overwriting; the device counts the turn that found the SQ full (send_busy_cnt)."""
    space.write(0, b"x" * 4096)
    space.prefault(MIB, MIB)
    with queue_and_counters(device.root, space) as (q, counters):
        for _ in range(abi.QUEUE_DEPTH - 1):
            q.write(0, 4096, MIB, 8192, level=1)
        with pytest.raises(RingFull):
            q.sq.push()
        q.doorbell()
        got = q.wait(abi.QUEUE_DEPTH - 1)
        assert len(got) == abi.QUEUE_DEPTH - 1 and all(c.status == abi.Status.OK for c in got)
        assert int(counters.queue(q.sqn)[Queue.SEND_BUSY]) >= 1


def test_cq_never_returned_overflows_and_disables_the_queue(device: DeviceProc, space: AddressSpace) -> None:
    """A consumer that reads CQEs but never rings the CQ doorbell leaves the device no CQ slot:
    the next completion is a CQ overflow (an AEQE ``QM_CQ_OVERFLOW``), and the QM driver disables
    the queue (TX/RX)."""
    space.write(0, b"y" * 100)
    space.prefault(MIB, MIB)
    with queue_and_counters(device.root, space) as (q, counters):
        for _ in range(abi.QUEUE_DEPTH - 1):
            q.write(0, 100, MIB, 4096, level=1)
        q.doorbell()
        got: list[object] = []
        deadline = time.monotonic() + 30
        while len(got) < abi.QUEUE_DEPTH - 1 and time.monotonic() < deadline:
            got += q.poll(ring_cq=False)  # consumed, but the slots are never given back
        assert len(got) == abi.QUEUE_DEPTH - 1
        q.write(0, 100, MIB, 4096, level=1)
        q.doorbell()
        assert wait_for(lambda: q.handle.view.tx_stopped and q.handle.view.rx_stopped)
        assert int(counters.queue(q.sqn)[Queue.CQ_OVERFLOWS]) == 1
        assert int(counters.dev[Dev.CQ_OVERFLOWS]) == 1
        # reported as an AEQE (QM_CQ_OVERFLOW), which the QM driver answers with qm_disable_qp
        assert wait_for(lambda: int(counters.dev[Dev.QPS_DISABLED]) == 1)
        assert int(counters.dev[Dev.AEQ_CQ_OVERFLOW]) == 1 and int(counters.dev[Dev.RESETS]) == 0


def test_qp_info_reports_the_ring_geometry(device: DeviceProc, space: AddressSpace) -> None:
    """UACCE_CMD_QM_SET_QP_INFO: what UADK asks before it sizes its rings (fallback depth 1024)."""
    q = RawQueue(device.root, space)
    try:
        reply, _ = q.handle.request({"cmd": "ioctl", "op": "set_qp_info"})
        assert reply == {"sqe_size": abi.SQE_SIZE, "sq_depth": abi.QUEUE_DEPTH, "cq_depth": abi.QUEUE_DEPTH}
        q.handle.put()
        with pytest.raises(OSError) as exc:
            q.handle.request({"cmd": "ioctl", "op": "set_qp_info"})
        assert exc.value.errno == errno.ENXIO
    finally:
        q.close()


def test_forked_child_cannot_map_the_inherited_queue(device: DeviceProc, space: AddressSpace) -> None:
    """fork: the child inherits the fd but not a fresh mapping — each region maps once per queue."""
    q = RawQueue(device.root, space)
    try:
        pid = os.fork()
        if pid == 0:  # child: only socket calls, then _exit
            code = 1
            try:
                q.handle.request({"cmd": "mmap", "region": int(abi.Region.DUS), "size": abi.DUS_SIZE})
            except OSError as exc:
                code = 0 if exc.errno == errno.EEXIST else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "the child's mmap must fail with EEXIST"
    finally:
        q.close()


def test_device_shutdown_drains_queued_jobs(tmp_path: Path, space: AddressSpace) -> None:
    """The device going away (uacce_remove) stops every queue the same way: what was doorbelled
    completes with its real result first."""
    dev = start_device(tmp_path / "root")
    space.write(0, os.urandom(MIB))
    space.prefault(2 * MIB, 2 * MIB)
    q = RawQueue(dev.root, space)
    try:
        for _ in range(8):
            q.write(0, MIB, 2 * MIB, codec.compress_bound(MIB), level=19)
        q.doorbell()
        time.sleep(0.1)
        stop_process(dev.proc)
        got = q.wait(8, timeout=10)
        assert [c.status for c in got] == [abi.Status.OK] * 8
    finally:
        q.close()
        stop_process(dev.proc)


@pytest.mark.parametrize("message", [
    {"cmd": "open"},  # no heap described
    {"cmd": "open", "base": "x", "size": 4096},
    {"cmd": "mmap", "region": None},
    {"cmd": "ioctl", "op": "set_qp_ctx", "qc_type": "compress"},
    {"cmd": 42},
], ids=["open-no-heap", "open-bad-base", "mmap-no-region", "ctx-bad-type", "bad-cmd"])
def test_malformed_requests_get_einval(device: DeviceProc, space: AddressSpace, message: dict[str, object]) -> None:
    """A request the kernel would reject as a bad argument gets EINVAL. An open file stays usable;
    a malformed open is a failed open(2), which leaves no file: the device hangs up, and a new
    connection opens."""
    f = RawFile(device.root)
    try:
        if message["cmd"] != "open":
            f.open(space)
        with pytest.raises(OSError) as exc:
            f.call(message, [space.heap_fd, space.pt_fd] if message["cmd"] == "open" else None)
        assert exc.value.errno == errno.EINVAL
        if message["cmd"] == "open":
            assert f.hung_up()
            f.close()
            f = RawFile(device.root)
            assert f.open(space) >= 1
        f.call({"cmd": "ioctl", "op": "start_q"})
    finally:
        f.close()
