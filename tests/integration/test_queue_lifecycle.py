"""The uacce queue state machine against a real device process: states, errnos, instances."""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import DeviceProc, start_device, wait_until
from warp import abi, cdev
from warp.device.launch import stop_process
from warp.iommu.space import AddressSpace
from warp.uacce import Device, QueueHandle, devices


class RawFile:
    """A queue file driven message by message, to reach every state by hand."""

    def __init__(self, paths: cdev.DevicePaths) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.connect(str(paths.chardev))

    def call(self, message: cdev.Message, fds: list[int] | None = None) -> tuple[cdev.Message, list[int]]:
        cdev.send(self.sock, message, fds)
        received = cdev.receive(self.sock)
        assert received is not None
        reply, out = received
        cdev.raise_for_reply(reply)
        return reply, out

    def open(self, space: AddressSpace) -> int:
        reply, fds = self.call({"cmd": "open", "base": space.base, "size": space.size},
                               [space.heap_fd, space.pt_fd])
        for fd in fds:
            socket.close(fd)
        return int(reply["pasid"])

    def mmap(self, region: int, size: int | None = None) -> None:
        if size is None:
            size = abi.REGION_SIZE[abi.Region(region)] if region in set(abi.Region) else 4096
        _, fds = self.call({"cmd": "mmap", "region": region, "size": size})
        for fd in fds:
            socket.close(fd)

    def ioctl(self, op: str, **kw: int) -> cdev.Message:
        return self.call({"cmd": "ioctl", "op": op, **kw})[0]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def space() -> Iterator[AddressSpace]:
    s = AddressSpace(1 << 20)
    yield s
    s.close()


@pytest.fixture
def small_device(tmp_path: Path) -> Iterator[DeviceProc]:
    dev = start_device(tmp_path / "root", "--queue-pairs", "2")
    yield dev
    stop_process(dev.proc)


def paths_of(dev: DeviceProc) -> cdev.DevicePaths:
    return cdev.DevicePaths(dev.root, "warp_zip-0")


def errno_of(exc: pytest.ExceptionInfo[OSError]) -> int:
    return int(exc.value.errno or 0)


def test_sysfs_attributes(device: DeviceProc) -> None:
    (found,) = devices(device.root, "zstd")
    assert found.api == "warp_zip_v1" and found.flags & abi.DEV_FLAG_SVA
    assert found.algorithms == ("zstd",) and not found.isolated
    assert (found.region_mmio_size, found.region_dus_size) == (abi.MMIO_SIZE, abi.DUS_SIZE)
    assert found.available_instances == 64
    assert devices(device.root, "gzip") == []
    mode = paths_of(device).chardev.stat().st_mode & 0o777
    assert mode == 0o600 and device.root.stat().st_mode & 0o777 == 0o700


def test_full_lifecycle_and_wrong_state_errnos(device: DeviceProc, space: AddressSpace) -> None:
    f = RawFile(paths_of(device))
    with pytest.raises(OSError) as exc:
        f.mmap(abi.Region.DUS)
    assert errno_of(exc) == errno.EBADF  # nothing is open yet
    pasid = f.open(space)
    assert pasid >= 1
    with pytest.raises(OSError) as exc:
        f.mmap(2)
    assert errno_of(exc) == errno.EINVAL  # no such region
    with pytest.raises(OSError) as exc:
        f.mmap(abi.Region.DUS, size=4096)
    assert errno_of(exc) == errno.EINVAL  # wrong size
    f.mmap(abi.Region.DUS)
    with pytest.raises(OSError) as exc:
        f.mmap(abi.Region.DUS)
    assert errno_of(exc) == errno.EEXIST  # once per queue
    f.mmap(abi.Region.MMIO)
    with pytest.raises(OSError) as exc:
        f.ioctl("set_qp_ctx", qc_type=2)
    assert errno_of(exc) == errno.EINVAL
    assert f.ioctl("set_qp_ctx", qc_type=0)["sqn"] == 0
    f.ioctl("start_q")
    with pytest.raises(OSError) as exc:
        f.ioctl("start_q")
    assert errno_of(exc) == errno.EINVAL  # START_Q only from INIT
    with pytest.raises(OSError) as exc:
        f.ioctl("frobnicate")
    assert errno_of(exc) == errno.EINVAL
    f.ioctl("put_q")
    f.ioctl("put_q")  # idempotent
    for call in (lambda: f.ioctl("start_q"), lambda: f.mmap(abi.Region.MMIO)):
        with pytest.raises(OSError) as exc:
            call()
        assert errno_of(exc) == errno.ENXIO  # the queue is a zombie
    f.close()


def test_instances_run_out_and_come_back(small_device: DeviceProc, space: AddressSpace) -> None:
    paths = paths_of(small_device)
    a, b, c = RawFile(paths), RawFile(paths), RawFile(paths)
    pasid_a = a.open(space)
    assert Device.read(paths).available_instances == 1
    assert b.open(space) == pasid_a  # one PASID per process, shared by its queues
    assert Device.read(paths).available_instances == 0
    with pytest.raises(OSError) as exc:
        c.open(space)
    assert errno_of(exc) == errno.EBUSY
    a.ioctl("put_q")  # PUT_Q frees the hardware queue while the file stays open
    assert Device.read(paths).available_instances == 1
    c.open(space)
    b.close()
    c.close()
    a.close()
    wait_until(lambda: Device.read(paths).available_instances == 2, 5, "closing to return every queue")


def test_queue_handle_sets_up_a_started_queue(device: DeviceProc, space: AddressSpace) -> None:
    (found,) = devices(device.root, "zstd")
    handle = QueueHandle(found, space, abi.QcType.DECOMPRESS)
    try:
        assert handle.pasid >= 1 and handle.qc_type is abi.QcType.DECOMPRESS
        assert len(handle.view.sq) == abi.QUEUE_DEPTH * abi.SQ_WORDS
        assert Device.read(found.paths).available_instances == 63
    finally:
        handle.put()
        handle.close()
