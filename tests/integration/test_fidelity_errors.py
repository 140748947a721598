"""Errors and isolation (reference §1.4, §1.5, §4.3, §7 items 1, 14, 16): malformed SQEs fail
with a status, hardware errors are counted and time-stamped, more than ``isolate_strategy`` in an
hour isolate the device (for good: test_fidelity_reset.py), and ``isolate_strategy`` is
validated like a kernel store."""

from __future__ import annotations

import errno
import os
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import DeviceProc, device_cli
from tests.integration.fidelity import RawFile, RawQueue, attr, dfx, paths, resets_reach, run_fresh, run_one, wait_for
from warp import abi, devices
from warp.device.pool import PoolSizes
from warp.device.zip import ZipDevice
from warp.dfx import Dev, Dfx, Queue
from warp.iommu.mmu import Iommu
from warp.sva import AddressSpace
from warp.uacce import QueueHandle

MIB = 1 << 20


@pytest.fixture
def space() -> Iterator[AddressSpace]:
    s = AddressSpace(4 * MIB)
    s.write(0, b"error path " * 400)
    s.prefault(MIB, MIB)
    yield s
    s.close()


def write_strategy(root: Path, text: str) -> None:
    """What ``echo TEXT > isolate_strategy`` does: truncate and write in place."""
    with open(paths(root).sysfs / "isolate_strategy", "w") as f:
        f.write(text)


@pytest.mark.parametrize(("written", "kept"), [
    ("3\n", "3"),
    ("65535\n", "65535"),
    ("0\n", "0"),
    ("65536\n", "7"),  # above UACCE_MAX_ERR_THRESHOLD: EINVAL, the previous value stays
    ("-1\n", "7"),
    ("lots\n", "7"),
    ("", "7"),
    ("0x10\n", "16"),  # kstrtoul(buf, 0): hex,
    ("010\n", "8"),  # octal,
    ("+5", "5"),  # a sign and no newline are fine;
    ("5 \n", "7"),  # trailing blanks are not,
    ("08\n", "7"),  # nor a digit outside the base,
    ("5\n\n", "7"),  # nor a second newline
])
def test_isolate_strategy_writes_are_validated(device: DeviceProc, written: str, kept: str) -> None:
    root = device.root
    assert (paths(root).sysfs / "isolate_strategy").stat().st_mode & 0o777 == 0o644
    assert (paths(root).sysfs / "isolate").stat().st_mode & 0o777 == 0o444
    write_strategy(root, "7\n")
    counters = dfx(root)
    try:
        assert wait_for(lambda: int(counters.dev[Dev.ISOLATE_STRATEGY]) == 7, 5)
        write_strategy(root, written)
        time.sleep(0.35)  # three polls: an unreadable value is looked at twice before it is refused
        assert wait_for(lambda: attr(root, "isolate_strategy") == kept, 5)
        assert int(counters.dev[Dev.ISOLATE_STRATEGY]) == int(kept)
    finally:
        counters.close()



def test_hw_errors_isolate_the_device(device: DeviceProc, space: AddressSpace) -> None:
    root = device.root
    idle = RawFile(root)  # a queue opened before isolation and never started (INIT)
    idle.open(space)
    counters = dfx(root)
    try:
        write_strategy(root, "2\n")
        assert wait_for(lambda: int(counters.dev[Dev.ISOLATE_STRATEGY]) == 2, 5)
        cli = device_cli(root, "inject", "hw-error", "--count", "5")
        assert cli.returncode == 0, cli.stderr
        assert int(counters.dev[Dev.HW_ERRORS_PENDING]) == 5
        before = time.time_ns()
        for n in (1, 2):
            assert run_fresh(root, space) == abi.Status.HW_ERROR
            assert wait_for(resets_reach(counters, n), 5)
        assert attr(root, "isolate") == "0", "two errors in the hour: not more than isolate_strategy=2"
        q = RawQueue(root, space)
        row = counters.queue(q.sqn)
        try:
            assert run_one(q) == abi.Status.HW_ERROR
            # the third error in the hour isolates (in the reset it triggers)
            assert wait_for(lambda: attr(root, "isolate") == "1", 5)
            assert int(counters.dev[Dev.ISOLATED]) == 1 and int(counters.dev[Dev.ISOLATIONS]) == 1
            assert int(counters.dev[Dev.HW_ERRORS]) == 3 and int(counters.dev[Dev.HW_ERRORS_WINDOW]) == 3
            assert int(counters.dev[Dev.HW_ERRORS_PENDING]) == 2, "a reset keeps the injected budget"
            assert before <= int(counters.dev[Dev.LAST_HW_ERROR_NS]) <= time.time_ns()
            assert int(row[Queue.ERR_HW]) == 1 and int(row[Queue.ERR_BD]) == 1
            assert q.handle.view.tx_stopped and q.handle.view.rx_stopped, "running queues are disabled"
        finally:
            q.close()
        assert devices(root, "zstd") == [], "discovery skips an isolated device"
        (found,) = devices(root, "zstd", every=True)
        assert found.isolated
        # The kernel refuses neither open nor START_Q on an isolated device: `isolate` is for
        # user space to read. A new queue starts with clear stop flags (hisi_qm_unset_hw_reset).
        fresh = QueueHandle(found, space, abi.QcType.COMPRESS)
        assert not fresh.view.tx_stopped and not fresh.view.rx_stopped
        fresh.put()
        fresh.close()
        assert idle.call({"cmd": "ioctl", "op": "start_q"}) == {}, "START_Q of a queue opened before"
        assert idle.call({"cmd": "ioctl", "op": "set_qp_ctx", "qc_type": 0})["sqn"] >= 0
        write_strategy(root, "9\n")  # refused while isolated (EPERM): the old value comes back
        assert wait_for(lambda: attr(root, "isolate_strategy") == "2", 5)
    finally:
        counters.close()
        idle.close()


def test_hw_errors_without_a_threshold_never_isolate(device: DeviceProc, space: AddressSpace) -> None:
    counters = dfx(device.root)
    try:
        assert device_cli(device.root, "inject", "hw-error", "--count", "10").returncode == 0
        outcomes = []
        for n in range(11):
            outcomes.append(run_fresh(device.root, space))
            assert wait_for(resets_reach(counters, min(n + 1, 10)), 5)
        assert outcomes == [abi.Status.HW_ERROR] * 10 + [abi.Status.OK]
        assert attr(device.root, "isolate") == "0" and int(counters.dev[Dev.HW_ERRORS]) == 10
    finally:
        counters.close()


def test_random_sqes_complete_with_a_status_and_never_crash(device: DeviceProc, space: AddressSpace) -> None:
    """Garbage in every word, or a valid opcode with garbage lengths, levels and addresses: each
    SQE completes with some status; the device and its next job are fine."""
    rng = random.Random(1234)
    q = RawQueue(device.root, space)
    try:
        for _ in range(4):
            for n in range(100):
                words = {i: rng.getrandbits(32) for i in range(abi.SQ_WORDS)}
                if n % 2:
                    words[abi.W.REQ_TYPE] = abi.Alg.ZSTD
                    words[abi.W.INPUT_LEN] = rng.choice([0, 1, 4096, rng.getrandbits(32)])
                    words[abi.W.DEST_AVAIL] = rng.choice([0, 64, 8192, rng.getrandbits(32)])
                    words[abi.W.LEVEL] = abi.level_to_word(rng.randint(-10, 25))
                q.write_words(words)
            q.doorbell()
            got = q.wait(100)
            assert len(got) == 100
            assert {c.status for c in got} <= {int(s) for s in abi.Status}
        assert run_one(q) == abi.Status.OK
        assert device.proc.poll() is None
    finally:
        q.close()


@pytest.mark.parametrize("word", [
    0xF << 12,  # a command nibble no doorbell has
    (5000 << 32),  # an SQ index past the ring
    0xFFFF_FFFF_FFFF_FFFF,
    abi.encode_doorbell(0xABC, abi.DoorbellCmd.SQ, 1),  # another queue's number
    abi.encode_doorbell(0, abi.DoorbellCmd.AEQ, 1),
], ids=["bad-cmd", "index-past-ring", "all-ones", "other-qn", "aeq"])
def test_malformed_doorbells_are_ignored(device: DeviceProc, space: AddressSpace, word: int) -> None:
    """A doorbell the device cannot decode is ignored — for the SQ and the CQ latch alike — and
    the queue (and its engine) go on serving the next good one."""
    q = RawQueue(device.root, space)
    try:
        q.write(0, 4000, MIB, 8192, level=1)
        for cmd in (abi.DoorbellCmd.SQ, abi.DoorbellCmd.CQ):
            q.handle.latches[cmd] = word
        os.eventfd_write(q.handle.db_fd, 1)  # the kick that makes the device read the bad latches
        time.sleep(0.1)
        assert q.poll() == []
        q.doorbell()
        (done,) = q.wait(1)
        assert done.status == abi.Status.OK
        assert run_one(q) == abi.Status.OK
        assert device.proc.poll() is None
    finally:
        q.close()


def test_queues_cannot_be_created_or_started_while_the_qm_resets(tmp_path: Path, space: AddressSpace) -> None:
    """``qm_qp_avail_state``: while a controller reset has the QM stopped — held here in its stop
    of a queue an engine is busy with (the test holds the queue's lock, as the engine would) —
    creating a queue (open) and starting one fail with EPERM; once it is over, starting works.
    The reset sets the stop flags of a queue that was never started too. Driven in process."""
    counters = Dfx(tmp_path / "dfx", queues=4, engines=2, create=True)
    iommu = Iommu(counters.faults)
    zip_dev = ZipDevice(iommu, counters, PoolSizes(1, 1))
    mapping = iommu.bind(os.getpid(), space.heap_fd, space.pt_fd, space.base, space.size)
    busy = zip_dev.get_queue(mapping)
    zip_dev.start_queue(busy)
    idle = zip_dev.get_queue(mapping)
    resetting = threading.Thread(target=zip_dev.control, args=({"cmd": "reset"},))
    try:
        with busy.lock:
            resetting.start()
            assert wait_for(lambda: zip_dev.ras.qm_stopped, 5)
            for call in (lambda: zip_dev.get_queue(mapping), lambda: zip_dev.start_queue(idle)):
                with pytest.raises(OSError) as refused:
                    call()
                assert refused.value.errno == errno.EPERM
        resetting.join(10)
        assert not zip_dev.ras.qm_stopped and int(counters.dev[Dev.RESETS]) == 1
        assert idle.view.tx_stopped and idle.view.rx_stopped, "a queue never started is stopped too"
        zip_dev.start_queue(idle)
        zip_dev.stop_queue(idle)
        zip_dev.stop_queue(busy)
    finally:
        zip_dev.put_queue(idle)
        zip_dev.put_queue(busy)
        iommu.unbind(mapping)
        zip_dev.close()
        iommu.faults.close()
        counters.close()
