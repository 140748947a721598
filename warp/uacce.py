"""User side of uacce: device discovery in sysfs and the life of one queue (wd_request_ctx …).

Mirrors libwd: read the attributes of every ``<root>/sys/class/uacce/*`` device, match the
algorithm by exact line, skip isolated devices, rank by NUMA distance then free queues
(``wd_get_accel_dev``); then open a queue (which binds this process's address space and returns
its PASID), mmap DUS and MMIO, pick the doorbell from the ``api`` version (``hisi_qm_setup_db``),
set the queue direction, and start it.

Isolation is learnt the kernel's way: the ``isolate`` attribute at discovery, and, for queues
already open, the TX/RX stop flags in their DUS (the driver's ``-WD_HW_EACCESS``). Opening or
starting a queue on an isolated device is not refused (the kernel has no such check).
"""

from __future__ import annotations

import errno
import mmap
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Final, final

from warp import abi, cdev, numa, shm
from warp.ring import DusView
from warp.sva import AddressSpace, not_inherited

#: Seconds a control request (open, mmap, ioctl) may take before the device counts as unresponsive.
CONTROL_TIMEOUT: Final = 5.0
#: Where UADK's ``get_version_id`` reads the QM version in ``api``: after ``hisi_qm_v``.
VERSION_ID_SHIFT: Final = 9


def qm_version(api: str) -> int:
    """The QM version in an ``api`` string as UADK's ``get_version_id`` reads it: the decimal
    number ``VERSION_ID_SHIFT`` characters in (``hisi_qm_v2`` → 2), 0 when there is none."""
    digits = api[VERSION_ID_SHIFT:]
    digits = digits[:len(digits) - len(digits.lstrip("0123456789"))]
    return int(digits) if digits else 0


@final
@dataclass(frozen=True)
class Device:
    """One accelerator's sysfs attributes, read at discovery time."""

    paths: cdev.DevicePaths
    api: str
    flags: int
    algorithms: tuple[str, ...]
    available_instances: int
    isolated: bool
    isolate_strategy: int
    region_mmio_size: int
    region_dus_size: int
    node_id: int

    @property
    def name(self) -> str:
        return self.paths.name

    @classmethod
    def read(cls, paths: cdev.DevicePaths) -> Device:
        cdev.check_trusted(paths.sysfs)

        def attr(name: str) -> str:
            path = paths.sysfs / name
            cdev.check_trusted(path)
            return path.read_text().strip()

        return cls(paths=paths, api=attr("api"), flags=int(attr("flags")),
                   algorithms=tuple(attr("algorithms").splitlines()),
                   available_instances=int(attr("available_instances")), isolated=attr("isolate") == "1",
                   isolate_strategy=int(attr("isolate_strategy")),
                   region_mmio_size=int(attr("region_mmio_size")),
                   region_dus_size=int(attr("region_dus_size")), node_id=int(attr("node_id")))


def devices(root: Path, algorithm: str | None = None, every: bool = False,
            node: int | None = None, nodes: Path = numa.NODE_SYSFS) -> list[Device]:
    """Every device under ``root`` offering ``algorithm`` (exact line match), best first: as
    ``wd_get_accel_dev`` picks, a device with a free queue before one without, then the smallest
    NUMA distance from ``node`` (default: the caller's, from ``nodes``), then the most free queues.
    Isolated devices, and devices whose ``flags`` lack ``UACCE_DEV_SVA`` (no char device: QM
    registers none when SVA was not negotiated), are left out unless ``every`` (``warpzip info``).

    Raises :class:`cdev.Untrusted` if the root, or what is under it, is not ours (see
    :func:`cdev.check_trusted`): a tree someone else planted is refused, not skipped over."""
    base = root / "sys" / "class" / "uacce"
    found: list[Device] = []
    try:
        for path in (root, root / "sys", root / "sys" / "class", base):
            cdev.check_trusted(path)
    except FileNotFoundError:
        return found
    for entry in sorted(base.iterdir()) if base.is_dir() else []:
        try:
            device = Device.read(cdev.DevicePaths(root, entry.name))
        except cdev.Untrusted:
            raise
        except (OSError, ValueError):
            continue  # half-published or vanished
        if algorithm is not None and algorithm not in device.algorithms:
            continue
        if not every and (device.isolated or not device.flags & abi.DEV_FLAG_SVA):
            continue
        found.append(device)
    here = numa.current_node(nodes) if node is None else node
    return sorted(found, key=lambda d: (d.available_instances == 0, numa.distance(here, d.node_id, nodes),
                                        -d.available_instances))


@final
class QueueHandle:
    """One open, started hardware queue: its file, mapped regions, doorbells and interrupt."""

    def __init__(self, device: Device, space: AddressSpace, qc_type: abi.QcType) -> None:
        if qm_version(device.api) < 2:  # 0: get_version_id's -WD_EINVAL; 1: the 0x340 doorbell, not driven here
            raise OSError(errno.EINVAL, f"{device.name}: api {device.api!r} is not a QM v2+ queue")
        self.device = device
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        # A device that accepts but never answers (hung) must not freeze the caller's event loop.
        self.sock.settimeout(CONTROL_TIMEOUT)
        self._maps: list[mmap.mmap] = []
        self.closed = False
        try:
            for path in (device.paths.chardev.parent, device.paths.chardev):
                cdev.check_trusted(path)
            self.sock.connect(str(device.paths.chardev))
            cdev.check_peer(self.sock, device.paths.chardev)  # before our heap goes anywhere
            reply, fds = self.request({"cmd": "open", "base": space.base, "size": space.size},
                                      [space.heap_fd, space.pt_fd])
            self.pasid = int(reply["pasid"])
            self.irq_fd = fds[0]
            dus_fd = self._mmap(abi.Region.DUS)[0]
            mmio_fd, self.db_fd = self._mmap(abi.Region.MMIO)
            self.dus = self._map(dus_fd, abi.DUS_SIZE)
            self.view = DusView.over(memoryview(self.dus))
            mmio = self._map(mmio_fd, abi.MMIO_SIZE)
            self.latches = abi.doorbell_words(mmio)
            self.sqn = int(self.request({"cmd": "ioctl", "op": "set_qp_ctx", "qc_type": int(qc_type)})[0]["sqn"])
            self.qc_type = qc_type
            self.request({"cmd": "ioctl", "op": "start_q"})
        except BaseException:
            self.close()
            raise

    def request(self, message: cdev.Message, fds: list[int] | None = None) -> tuple[cdev.Message, list[int]]:
        """One ioctl/mmap round trip; raises the ``OSError`` the device answered."""
        cdev.send(self.sock, message, fds)
        received = cdev.receive(self.sock)
        if received is None:
            raise ConnectionResetError("device closed the queue file")
        reply, out_fds = received
        cdev.raise_for_reply(reply)
        return reply, out_fds

    def ring(self, cmd: abi.DoorbellCmd, index: int, priority: int = 0) -> None:
        """Store the doorbell word (one aligned 64-bit store); an SQ doorbell also kicks the device
        if no engine is awake on the queue (:func:`warp.abi.fence`)."""
        latches = self.latches
        latches[cmd] = abi.encode_doorbell(self.sqn, cmd, index, priority)
        if cmd is not abi.DoorbellCmd.SQ:
            return
        abi.fence()
        if latches[abi.KICK]:
            latches[abi.KICK] = 0  # one kick wakes it; the engine clears the word itself as it starts
            os.eventfd_write(self.db_fd, 1)

    def irq_read(self) -> int:
        """Acknowledge interrupts (the eventfd is non-blocking: BlockingIOError when none)."""
        return os.eventfd_read(self.irq_fd)

    def put(self) -> None:
        """UACCE_CMD_PUT_Q: release the hardware queue now; closing the file may come later."""
        self.request({"cmd": "ioctl", "op": "put_q"})

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.sock.close()
        view = self.__dict__.pop("view", None)
        if view is not None:
            view.release()
        self.__dict__.pop("latches", None)
        for m in self._maps:
            shm.unmap(m)
        for name in ("irq_fd", "db_fd"):
            fd = self.__dict__.pop(name, None)
            if fd is not None:
                os.close(fd)

    def _mmap(self, region: abi.Region) -> list[int]:
        return self.request({"cmd": "mmap", "region": int(region), "size": abi.REGION_SIZE[region]})[1]

    def _map(self, fd: int, size: int) -> mmap.mmap:
        """Map a region; a forked child does not inherit it (the kernel's VM_DONTCOPY), and finds
        zero-filled memory in its place rather than a hole its next mapping could land in, which
        this queue's inherited ``mmap`` objects would unmap when collected (:mod:`warp.sva`)."""
        try:
            mapping = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        not_inherited(mapping)
        self._maps.append(mapping)
        return mapping
