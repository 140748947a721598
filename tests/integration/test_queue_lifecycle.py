"""The uacce queue state machine against a real device process: states, errnos, instances."""

from __future__ import annotations

import dataclasses
import errno
import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness import DeviceProc, start_device, wait_until
from tests.integration.fidelity import RawFile
from warp import abi, cdev
from warp.device.launch import stop_process
from warp.sva import AddressSpace
from warp.uacce import Device, QueueHandle, devices, qm_version


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
    assert found.api == "hisi_qm_v2" and qm_version(found.api) == 2, "UADK's get_version_id reads 2"
    assert found.flags & abi.DEV_FLAG_SVA
    assert found.algorithms == ("zstd", "lz77_zstd") and not found.isolated
    assert (found.region_mmio_size, found.region_dus_size) == (abi.MMIO_SIZE, abi.DUS_SIZE)
    assert found.available_instances == 64
    assert devices(device.root, "gzip") == []
    mode = paths_of(device).chardev.stat().st_mode & 0o777
    assert mode == 0o600 and device.root.stat().st_mode & 0o777 == 0o700


def expect_errno(code: int, call: Callable[[], object]) -> None:
    with pytest.raises(OSError) as exc:
        call()
    assert errno_of(exc) == code, errno.errorcode.get(errno_of(exc))


def test_full_lifecycle_and_wrong_state_errnos(device: DeviceProc, space: AddressSpace) -> None:
    """The modern uacce.c throughout: mmap checks region, then state, then EEXIST, then the
    driver's size ("up to" for MMIO, exact for DUS); every ioctl on a ZOMBIE, PUT_Q too, is ENXIO."""
    f = RawFile(device.root)
    pasid = f.open(space)
    assert pasid >= 1
    expect_errno(errno.EINVAL, lambda: f.mmap(2))  # no such region
    expect_errno(errno.EINVAL, lambda: f.mmap(abi.Region.DUS, size=4096))  # DUS only whole
    expect_errno(errno.EINVAL, lambda: f.mmap(abi.Region.MMIO, size=abi.MMIO_SIZE + abi.PAGE_SIZE))
    expect_errno(errno.EINVAL, lambda: f.mmap(abi.Region.MMIO, size=0))  # mmap(2) of nothing
    f.mmap(abi.Region.DUS)
    expect_errno(errno.EEXIST, lambda: f.mmap(abi.Region.DUS))  # once per queue
    expect_errno(errno.EEXIST, lambda: f.mmap(abi.Region.DUS, size=4096))  # before the driver's size check
    f.mmap(abi.Region.MMIO, size=abi.PAGE_SIZE)  # the doorbell window may be mapped in part
    expect_errno(errno.EINVAL, lambda: f.ioctl("set_qp_ctx", qc_type=2))
    assert f.ioctl("set_qp_ctx", qc_type=0)["sqn"] >= 0
    f.ioctl("start_q")
    expect_errno(errno.EINVAL, lambda: f.ioctl("start_q"))  # START_Q only from INIT
    expect_errno(errno.EINVAL, lambda: f.ioctl("frobnicate"))  # the driver's ioctl knows no such command
    f.ioctl("put_q")
    for call in (lambda: f.ioctl("put_q"), lambda: f.ioctl("start_q"), lambda: f.ioctl("set_qp_ctx", qc_type=0),
                 lambda: f.ioctl("frobnicate"), lambda: f.mmap(abi.Region.DUS)):
        expect_errno(errno.ENXIO, call)  # uacce_queue_is_valid: the queue is a zombie
    expect_errno(errno.EINVAL, lambda: f.mmap(2))  # the region number is looked at before the state
    f.close()


def test_a_file_exists_only_once_open_succeeded(device: DeviceProc, space: AddressSpace) -> None:
    """Connecting plus ``open`` is open(2): a first request that is not ``open`` is a malformed
    open (EINVAL) and the connection ends — there is no file to take it; an open file has only
    mmap, ioctl and close, so another ``open`` on it is EINVAL and the file lives on."""
    early = RawFile(device.root)
    expect_errno(errno.EINVAL, lambda: early.mmap(abi.Region.DUS))
    assert early.hung_up()
    early.close()
    f = RawFile(device.root)
    f.open(space)
    expect_errno(errno.EINVAL, lambda: f.open(space))
    f.mmap(abi.Region.DUS)  # still the same open file
    f.close()


def test_instances_run_out_and_come_back(small_device: DeviceProc, space: AddressSpace) -> None:
    paths = paths_of(small_device)
    a, b, c = RawFile(small_device.root), RawFile(small_device.root), RawFile(small_device.root)
    pasid_a = a.open(space)
    assert Device.read(paths).available_instances == 1
    assert b.open(space) == pasid_a  # one PASID per process, shared by its queues
    assert Device.read(paths).available_instances == 0
    expect_errno(errno.EBUSY, lambda: c.open(space))
    assert c.hung_up(), "a failed open(2) leaves no file"
    a.ioctl("put_q")  # PUT_Q frees the hardware queue while the file stays open
    assert Device.read(paths).available_instances == 1
    c.close()
    c = RawFile(small_device.root)
    c.open(space)
    b.close()
    c.close()
    a.close()
    wait_until(lambda: Device.read(paths).available_instances == 2, 5, "closing to return every queue")


def test_queue_ids_are_allocated_cyclically(device: DeviceProc, space: AddressSpace) -> None:
    """``idr_alloc_cyclic`` on ``qm->qp_idr``: a put queue's id is not handed out again at once;
    the next open gets the id after the last one given, wrapping at ``qp_num``."""
    (found,) = devices(device.root, "zstd")
    sqns = []
    for _ in range(3):
        handle = QueueHandle(found, space, abi.QcType.COMPRESS)
        sqns.append(handle.sqn)
        handle.put()
        handle.close()
    assert sqns == [0, 1, 2], "the lowest free id would be 0 every time"


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


def fake_device(root: Path, name: str, node: int, free: int, isolated: bool = False) -> None:
    """A published device's attribute files (no process behind them: discovery reads only these)."""
    sysfs = cdev.DevicePaths(root, name).sysfs
    sysfs.mkdir(parents=True)
    attrs = {"api": abi.API_VERSION, "flags": "1", "algorithms": "zstd", "available_instances": str(free),
             "isolate": str(int(isolated)), "isolate_strategy": "0", "region_mmio_size": str(abi.MMIO_SIZE),
             "region_dus_size": str(abi.DUS_SIZE), "node_id": str(node)}
    for attr, value in attrs.items():
        (sysfs / attr).write_text(value + "\n")


def test_discovery_ranks_by_numa_distance_then_free_queues(tmp_path: Path) -> None:
    """``wd_get_accel_dev``: the nearest node first (``numa_distance`` from the caller's node),
    among equals the most free queues; a device with none last; an isolated one not at all."""
    root, nodes = tmp_path / "root", tmp_path / "nodes"
    root.mkdir(mode=0o700)
    for node, row in enumerate(("10 20 30", "20 10 20", "30 20 10")):
        (nodes / f"node{node}").mkdir(parents=True)
        (nodes / f"node{node}" / "distance").write_text(row + "\n")
    fake_device(root, "far", node=2, free=64)
    fake_device(root, "near-busy", node=1, free=3)
    fake_device(root, "near-idle", node=1, free=40)
    fake_device(root, "local-full", node=0, free=0)
    fake_device(root, "local-isolated", node=0, free=64, isolated=True)
    ranked = [d.name for d in devices(root, "zstd", node=0, nodes=nodes)]
    assert ranked == ["near-idle", "near-busy", "far", "local-full"]
    assert [d.name for d in devices(root, "zstd", node=2, nodes=nodes)] == ["far", "near-idle", "near-busy",
                                                                              "local-full"]
    # Without a distance table every other node is as far as the next (libnuma's 10 / 20).
    assert [d.name for d in devices(root, "zstd", node=1, nodes=tmp_path / "none")][:2] == ["near-idle", "near-busy"]


def test_library_refuses_an_api_below_qm_v2(device: DeviceProc, space: AddressSpace) -> None:
    """UADK's ``get_version_id`` reads the number after ``hisi_qm_v``; 0 (none) is its EINVAL, and
    1 needs the v1 doorbell this library does not drive: the queue is refused before any open."""
    assert [qm_version(api) for api in ("hisi_qm_v2", "hisi_qm_v3", "hisi_qm_v10", "hisi_qm_v1", "warp_zip_v1",
                                        "hisi_qm_v")] == [2, 3, 10, 1, 0, 0]
    (found,) = devices(device.root, "zstd")
    for api in ("warp_zip_v1", "hisi_qm_v1"):
        old = dataclasses.replace(found, api=api)
        expect_errno(errno.EINVAL, functools.partial(QueueHandle, old, space, abi.QcType.COMPRESS))
    assert Device.read(found.paths).available_instances == 64, "refused before the device was asked"
