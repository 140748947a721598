"""The device-agnostic uacce core: char-device socket, sysfs attributes, and the queue state
machine of drivers/misc/uacce/uacce.c. Everything device-specific goes through :class:`Ops`
(``struct uacce_ops``), so a second device would reuse this file unchanged — the layering that
LKML review asked of uacce.

One connection is one open file is one queue. Its life: ``open`` (SVA bind → PASID, get_queue →
INIT) → ``mmap`` MMIO and DUS once each → ``ioctl start_q`` (INIT → STARTED) → ``ioctl put_q`` or
close (→ ZOMBIE, stop + put + unbind). Wrong-state calls get the kernel's errno.

sysfs attributes are plain files the core rewrites when they change. ``isolate_strategy`` is the
one writable attribute: a kernel attribute's store() runs on write(2) and can fail it, a file
cannot, so the core polls it (every ``ATTR_POLL_S``) and answers the way the kernel would — a
valid value goes to ``ops.isolate_err_threshold_write``; an invalid one (EINVAL) or one written
while the device is isolated (EPERM) is logged and the previous value is written back.
"""

from __future__ import annotations

import enum
import errno
import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Protocol, final

from warp import abi, cdev
from warp.iommu.mmu import Iommu, Mapping

log = logging.getLogger("warp.device")

#: How often the core looks for a write to ``isolate_strategy``.
ATTR_POLL_S: Final = 0.1
#: Attribute file modes, as the kernel's DEVICE_ATTR_RO / DEVICE_ATTR_RW.
MODE_RO: Final = 0o444
MODE_RW: Final = 0o644


class QState(enum.IntEnum):
    """enum uacce_q_state."""

    ZOMBIE = 0
    INIT = 1
    STARTED = 2


class Ops(Protocol):
    """``struct uacce_ops``: what a device driver provides to the core."""

    name: str
    algorithms: tuple[str, ...]

    def set_notifier(self, notify: Callable[[], None]) -> None:
        """Give the device the core's sysfs refresh, for state it changes on its own (isolation)."""

    def available_instances(self) -> int: ...

    def isolated(self) -> bool: ...

    def isolate_err_threshold_read(self) -> int: ...

    def isolate_err_threshold_write(self, threshold: int) -> None:
        """Raises ``OSError`` (EINVAL out of range, EPERM while isolated) as the kernel op does."""

    def get_queue(self, mapping: Mapping) -> Any: ...

    def put_queue(self, qp: Any) -> None: ...

    def start_queue(self, qp: Any) -> None: ...

    def stop_queue(self, qp: Any) -> None: ...

    def mmap(self, qp: Any, region: abi.Region) -> list[int]: ...

    def ioctl(self, qp: Any, message: cdev.Message) -> cdev.Message: ...

    def irq_fd(self, qp: Any) -> int: ...


@final
class QueueFile:
    """The per-open state the core keeps: ``struct uacce_queue``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.state = QState.ZOMBIE
        self.opened = False
        self.mapping: Mapping | None = None
        self.qp: Any = None
        self.regions: set[abi.Region] = set()
        self.released = False
        self.lock = threading.RLock()  # one request at a time per file; release waits for it


@final
class UacceCore:
    """Serves one device: publishes sysfs, accepts opens, runs each queue's control requests."""

    def __init__(self, paths: cdev.DevicePaths, ops: Ops, iommu: Iommu, node_id: int = 0) -> None:
        self.paths = paths
        self.ops = ops
        self.iommu = iommu
        self.node_id = node_id
        self._lock = threading.Lock()
        self._sysfs_lock = threading.Lock()
        self._files: set[QueueFile] = set()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._closing = threading.Event()
        self._strategy = "0"  # the accepted isolate_strategy text
        self._strategy_sig: tuple[int, int, int] | None = None
        self._strategy_odd: tuple[int, int, int] | None = None  # an unreadable write seen once
        ops.set_notifier(self.refresh)

    # ---- sysfs -----------------------------------------------------------------------------
    def publish(self) -> None:
        """Create the sysfs directory with every attribute of reference §1.4."""
        self.paths.sysfs.mkdir(parents=True, exist_ok=True)
        attrs = {
            "api": abi.API_VERSION,
            "flags": str(abi.DEV_FLAG_SVA),
            "algorithms": "\n".join(self.ops.algorithms),
            "region_mmio_size": str(abi.MMIO_SIZE),
            "region_dus_size": str(abi.DUS_SIZE),
            "node_id": str(self.node_id),
        }
        for name, value in attrs.items():
            write_attr(self.paths.sysfs / name, value)
        self._strategy = str(self.ops.isolate_err_threshold_read())
        self._write_strategy(self._strategy)
        self.refresh()
        thread = threading.Thread(target=self._watch_attrs, name="uacce-sysfs", daemon=True)
        thread.start()
        self._threads.append(thread)

    def refresh(self) -> None:
        """Rewrite the attributes that change at run time (queue files call this concurrently)."""
        with self._sysfs_lock:
            write_attr(self.paths.sysfs / "available_instances", str(self.ops.available_instances()))
            write_attr(self.paths.sysfs / "isolate", "1" if self.ops.isolated() else "0")

    # ---- the writable attribute ------------------------------------------------------------
    def _watch_attrs(self) -> None:
        while not self._closing.wait(ATTR_POLL_S):
            try:
                self.check_isolate_strategy()
            except Exception:  # a vanished root (test teardown) must not take the device down
                log.exception("isolate_strategy watch failed")

    def check_isolate_strategy(self) -> None:
        """Apply, or refuse and restore, a write of ``isolate_strategy`` since the last look."""
        path = self.paths.sysfs / "isolate_strategy"
        try:
            st = path.stat()
            text = path.read_text()
        except FileNotFoundError:
            text, st = "", None
        sig = (st.st_ino, st.st_mtime_ns, st.st_size) if st is not None else None
        if sig is not None and sig == self._strategy_sig:
            return
        value = text.strip()
        try:
            threshold = int(value, 10)
        except ValueError:
            if sig is not None and sig != self._strategy_odd:
                self._strategy_odd = sig  # maybe a write in progress (truncate, then write): look again
                return
            log.error("isolate_strategy: %r is not a number (EINVAL); keeping %s", value, self._strategy)
            self._write_strategy(self._strategy)
            return
        try:
            self.ops.isolate_err_threshold_write(threshold)
        except OSError as exc:
            log.error("isolate_strategy: write of %r refused (%s): %s; keeping %s", value,
                      errno.errorcode.get(exc.errno or 0, "EIO"), exc.strerror, self._strategy)
            self._write_strategy(self._strategy)
            return
        log.info("isolate_strategy set to %d (was %s); hardware-error list cleared", threshold, self._strategy)
        self._strategy = str(threshold)
        self._write_strategy(self._strategy)

    def _write_strategy(self, text: str) -> None:
        path = self.paths.sysfs / "isolate_strategy"
        with self._sysfs_lock:
            st = write_attr(path, text, MODE_RW)
        self._strategy_sig = (st.st_ino, st.st_mtime_ns, st.st_size)
        self._strategy_odd = None

    # ---- char device -----------------------------------------------------------------------
    def serve(self) -> None:
        """Bind the char-device socket (owner-only) and accept opens on a thread."""
        self._listener = cdev.listen(self.paths.chardev, 64)
        self._threads.append(cdev.accept_on_thread(self._listener, self._open_file, "uacce-accept"))

    def close(self) -> None:
        self._closing.set()
        if self._listener is not None:
            cdev.stop_listening(self._listener)
            self._listener = None
        with self._lock:
            files = list(self._files)
        for qf in files:
            self._release(qf)

    def _open_file(self, conn: socket.socket) -> None:
        """A connection is an open() of the char device: its file is served on a thread of its own."""
        pid = cdev.peer_credentials(conn)[0]
        threading.Thread(target=self._serve_file, args=(conn, QueueFile(pid)),
                         name=f"uacce-file-{pid}", daemon=True).start()

    def _serve_file(self, conn: socket.socket, qf: QueueFile) -> None:
        with self._lock:
            self._files.add(qf)
        try:
            while True:
                try:
                    received = cdev.receive(conn)
                except (OSError, ValueError):
                    return
                if received is None:
                    return
                message, fds = received
                out_fds: list[int] = []
                try:
                    reply, out_fds = self.dispatch(qf, message, fds)
                except OSError as exc:
                    reply = cdev.error_reply(exc.errno or errno.EIO, exc.strerror or str(exc))
                except (KeyError, TypeError, ValueError) as exc:  # a malformed request, as a bad ioctl argument
                    reply = cdev.error_reply(errno.EINVAL, f"malformed request: {exc!r}")
                finally:
                    for fd in fds:
                        os.close(fd)
                try:
                    cdev.send(conn, reply, out_fds)
                except OSError:
                    return
        finally:
            self._release(qf)
            conn.close()

    def dispatch(self, qf: QueueFile, message: cdev.Message, fds: list[int]) -> tuple[cdev.Message, list[int]]:
        """Run one request against the queue state machine; raises ``OSError`` with the kernel's errno."""
        cmd = message.get("cmd")
        with qf.lock:
            if qf.released:
                raise OSError(errno.ENXIO, "the device is going away")
            if cmd == "open":
                return self._open(qf, message, fds)
            if not qf.opened:
                raise OSError(errno.EBADF, "queue file is not open")
            if cmd == "mmap":
                return self._mmap(qf, message)
            if cmd == "ioctl":
                return self._ioctl(qf, message), []
        raise OSError(errno.EINVAL, f"unknown command {cmd!r}")

    def _open(self, qf: QueueFile, message: cdev.Message, fds: list[int]) -> tuple[cdev.Message, list[int]]:
        if qf.opened:
            raise OSError(errno.EBUSY, "already open")
        if self.ops.isolated():
            raise OSError(errno.EIO, "device is isolated")
        if len(fds) != 2:
            raise OSError(errno.EINVAL, "open needs the heap and page-table memfds")
        mapping = self.iommu.bind(qf.pid, fds[0], fds[1], int(message["base"]), int(message["size"]))
        try:
            qp = self.ops.get_queue(mapping)
        except OSError:
            self.iommu.unbind(mapping)
            raise
        qf.mapping, qf.qp, qf.state, qf.opened = mapping, qp, QState.INIT, True
        self.refresh()
        return {"pasid": mapping.pasid}, [self.ops.irq_fd(qp)]

    def _mmap(self, qf: QueueFile, message: cdev.Message) -> tuple[cdev.Message, list[int]]:
        if qf.state not in (QState.INIT, QState.STARTED):
            raise OSError(errno.ENXIO, "queue is not live")
        try:
            region = abi.Region(int(message["region"]))
        except (KeyError, ValueError):
            raise OSError(errno.EINVAL, "no such region") from None
        if int(message.get("size", -1)) != abi.REGION_SIZE[region]:
            raise OSError(errno.EINVAL, f"{region.name} size must be {abi.REGION_SIZE[region]}")
        if region in qf.regions:
            raise OSError(errno.EEXIST, f"{region.name} is already mapped")
        fds = self.ops.mmap(qf.qp, region)
        qf.regions.add(region)
        return {"region": int(region)}, fds

    def _ioctl(self, qf: QueueFile, message: cdev.Message) -> cdev.Message:
        op = message.get("op")
        if op == "put_q":
            self._put(qf)
            return {}
        if qf.state is QState.ZOMBIE:
            raise OSError(errno.ENXIO, "queue was put")
        if op == "start_q":
            if qf.state is not QState.INIT:
                raise OSError(errno.EINVAL, "START_Q is only valid in INIT")
            if self.ops.isolated():
                raise OSError(errno.EIO, "device is isolated")
            self.ops.start_queue(qf.qp)
            qf.state = QState.STARTED
            return {}
        return self.ops.ioctl(qf.qp, message)

    def _put(self, qf: QueueFile) -> None:
        """PUT_Q: stop if started (jobs in flight drain or complete QUEUE_STOPPED), free the
        hardware queue, keep the file (idempotent)."""
        with qf.lock:
            if qf.state is QState.STARTED:
                self.ops.stop_queue(qf.qp)
            if qf.state in (QState.INIT, QState.STARTED):
                self.ops.put_queue(qf.qp)
                qf.state = QState.ZOMBIE
                self.refresh()

    def _release(self, qf: QueueFile) -> None:
        """close(): stop, put, unbind the address space."""
        with self._lock:
            if qf not in self._files:
                return
            self._files.discard(qf)
        with qf.lock:
            qf.released = True
            self._put(qf)
            if qf.mapping is not None:
                self.iommu.unbind(qf.mapping)
                qf.mapping = None


def write_attr(path: Path, value: str, mode: int = MODE_RO) -> os.stat_result:
    """Replace an attribute file atomically, so readers never see it half written.

    Returns the stat of what was written, taken before the rename (which keeps inode, mtime and
    size): a stat after it could already see a user's write that followed, and the core would
    take that write for its own and never look at it.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)  # a read-only leftover would refuse the write for a non-root owner
    tmp.write_text(value + "\n")
    os.chmod(tmp, mode)
    st = tmp.stat()
    os.replace(tmp, path)
    return st
