"""The device-agnostic uacce core: char-device socket, sysfs attributes, and the queue state
machine of drivers/misc/uacce/uacce.c. Everything device-specific goes through :class:`Ops`
(``struct uacce_ops``), so a second device would reuse this file unchanged — the layering that
LKML review asked of uacce.

The errnos are those of the modern uacce.c (since the 2022 "handle parent device removal" rework,
reference §1.3), one generation throughout: every ioctl on a queue that is not INIT or STARTED —
PUT_Q included — is ENXIO (``uacce_queue_is_valid``), mmap looks at the region number (EINVAL)
before the queue's state (ENXIO) and leaves the size to the driver's mmap.

One connection is one open file is one queue. Connecting and the first request, ``open`` (which
carries what the kernel takes from ``current``: the address space to bind), are together open(2):
SVA bind → PASID, get_queue → INIT. An open that fails leaves no file: the device answers the
errno and closes the connection, as a failed open(2) leaves no fd; a first request that is not
``open`` is a malformed open(2) (EINVAL, closed too). A file that exists has only the file
operations: ``mmap`` MMIO and DUS once each, ``ioctl`` (start_q: INIT → STARTED; put_q → ZOMBIE;
the driver's), and close (→ stop + put + unbind).

sysfs attributes are plain files the core rewrites when they change. ``isolate_strategy`` is the
one writable attribute: a kernel attribute's store() runs on write(2) and can fail it, a file
cannot, so the core polls it (every ``ATTR_POLL_S``) and answers as ``isolate_strategy_store``
would — the text is parsed like ``kstrtoul(buf, 0)`` and range-checked (EINVAL), then goes to
``ops.isolate_err_threshold_write`` (EPERM while isolated); a refused write is logged and the
previous value is written back, which is how a failed write shows here.
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
        """Raises ``OSError`` (EPERM while isolated) as the kernel op does; the core checked the range."""

    def get_queue(self, mapping: Mapping) -> Any: ...

    def put_queue(self, qp: Any) -> None: ...

    def start_queue(self, qp: Any) -> None: ...

    def stop_queue(self, qp: Any) -> None: ...

    def mmap(self, qp: Any, region: abi.Region, size: int) -> list[int]:
        """The region's fds; raises EINVAL for a size the region cannot have (the driver's check)."""

    def ioctl(self, qp: Any, message: cdev.Message) -> cdev.Message: ...

    def irq_fd(self, qp: Any) -> int: ...


@final
class QueueFile:
    """The per-open state the core keeps: ``struct uacce_queue``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.state = QState.ZOMBIE
        self.mapping: Mapping | None = None
        self.qp: Any = None
        self.regions: set[abi.Region] = set()
        self.released = False
        self.lock = threading.RLock()  # one request at a time per file; release waits for it


@final
class UacceCore:
    """Serves one device: publishes sysfs, accepts opens, runs each queue's control requests."""

    def __init__(self, paths: cdev.DevicePaths, ops: Ops, iommu: Iommu, node_id: int = 0, sva: bool = True) -> None:
        self.paths = paths
        self.ops = ops
        self.iommu = iommu
        self.node_id = node_id
        #: The negotiated UACCE_DEV_SVA: ``uacce_alloc`` clears it when the IOMMU cannot enable
        #: IOPF and SVA for the device, and the QM driver then does not register the char device
        #: ("only consider sva case"): the device is published without a way in.
        self.sva = sva
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
            "flags": str(abi.DEV_FLAG_SVA if self.sva else 0),
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
        try:
            threshold = kstrtoul(text)
        except ValueError:
            if sig is not None and sig != self._strategy_odd:
                self._strategy_odd = sig  # maybe a write in progress (truncate, then write): look again
                return
            self._refuse(text, OSError(errno.EINVAL, "not a number kstrtoul(buf, 0) reads"))
            return
        try:
            if threshold > abi.ISOLATE_STRATEGY_MAX:  # isolate_strategy_store, before the driver sees it
                raise OSError(errno.EINVAL, f"above UACCE_MAX_ERR_THRESHOLD {abi.ISOLATE_STRATEGY_MAX}")
            self.ops.isolate_err_threshold_write(threshold)
        except OSError as exc:
            self._refuse(text, exc)
            return
        log.info("isolate_strategy set to %d (was %s); hardware-error list cleared", threshold, self._strategy)
        self._strategy = str(threshold)
        self._write_strategy(self._strategy)

    def _refuse(self, text: str, exc: OSError) -> None:
        """The write failed as ``isolate_strategy_store`` would fail it: say so, put the old value back."""
        log.error("isolate_strategy: write of %r refused (%s): %s; keeping %s", text,
                  errno.errorcode.get(exc.errno or 0, "EIO"), exc.strerror, self._strategy)
        self._write_strategy(self._strategy)

    def _write_strategy(self, text: str) -> None:
        path = self.paths.sysfs / "isolate_strategy"
        with self._sysfs_lock:
            st = write_attr(path, text, MODE_RW)
        self._strategy_sig = (st.st_ino, st.st_mtime_ns, st.st_size)
        self._strategy_odd = None

    # ---- char device -----------------------------------------------------------------------
    def serve(self) -> None:
        """Bind the char-device socket (owner-only) and accept opens on a thread — unless SVA was
        not negotiated: then no char device is registered (``hisi_qm_alloc_uacce`` refuses)."""
        if not self.sva:
            log.warning("%s: the IOMMU cannot enable IOPF/SVA; UACCE_DEV_SVA cleared, no char device", self.paths.name)
            return
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
            opening = True
            while True:
                try:
                    received = cdev.receive(conn)
                except (OSError, ValueError):
                    return
                if received is None:
                    return
                reply, out_fds = self._answer(qf, *received, opening=opening)
                try:
                    cdev.send(conn, reply, out_fds)
                except OSError:
                    return
                if opening and "errno" in reply:
                    return  # open(2) failed: no file exists to take further requests
                opening = False
        finally:
            self._release(qf)
            conn.close()

    def _answer(self, qf: QueueFile, message: cdev.Message, fds: list[int], *,
                opening: bool) -> tuple[cdev.Message, list[int]]:
        """Run one request; the reply (an errno name on failure) and the fds that go with it."""
        try:
            return self.dispatch(qf, message, fds, opening=opening)
        except OSError as exc:
            return cdev.error_reply(exc.errno or errno.EIO, exc.strerror or str(exc)), []
        except (KeyError, TypeError, ValueError) as exc:  # a malformed request, as a bad ioctl argument
            return cdev.error_reply(errno.EINVAL, f"malformed request: {exc!r}"), []
        finally:
            for fd in fds:
                os.close(fd)

    def dispatch(self, qf: QueueFile, message: cdev.Message, fds: list[int], *,
                 opening: bool) -> tuple[cdev.Message, list[int]]:
        """Run one request against the queue state machine; raises ``OSError`` with the kernel's
        errno. ``opening``: the connection's first request, the rest of open(2)."""
        cmd = message.get("cmd")
        with qf.lock:
            if qf.released:
                raise OSError(errno.ENXIO, "the device is going away")
            if opening:
                if cmd != "open":
                    raise OSError(errno.EINVAL, "a queue file's first request completes open(2): send open")
                return self._open(qf, message, fds)
            if cmd == "mmap":
                return self._mmap(qf, message)
            if cmd == "ioctl":
                return self._ioctl(qf, message), []
        raise OSError(errno.EINVAL, f"{cmd!r} is not an operation on an open file (mmap, ioctl, close)")

    def _open(self, qf: QueueFile, message: cdev.Message, fds: list[int]) -> tuple[cdev.Message, list[int]]:
        """``uacce_fops_open``: bind the address space, get a queue. No isolation check: the
        kernel has none (``isolate`` only tells user space, which skips the device)."""
        if len(fds) != 2:
            raise OSError(errno.EINVAL, "open needs the heap and page-table memfds")
        mapping = self.iommu.bind(qf.pid, fds[0], fds[1], int(message["base"]), int(message["size"]))
        try:
            qp = self.ops.get_queue(mapping)
        except OSError:
            self.iommu.unbind(mapping)
            raise
        qf.mapping, qf.qp, qf.state = mapping, qp, QState.INIT
        self.refresh()
        return {"pasid": mapping.pasid}, [self.ops.irq_fd(qp)]

    def _mmap(self, qf: QueueFile, message: cdev.Message) -> tuple[cdev.Message, list[int]]:
        """``uacce_fops_mmap``: region number (EINVAL), queue valid (ENXIO), not mapped yet
        (EEXIST), then the driver's mmap, which checks the size; a length of 0 is mmap(2)'s EINVAL."""
        try:
            region = abi.Region(int(message["region"]))
        except (KeyError, ValueError):
            raise OSError(errno.EINVAL, "no such region") from None
        if qf.state not in (QState.INIT, QState.STARTED):
            raise OSError(errno.ENXIO, "queue is not live")
        if region in qf.regions:
            raise OSError(errno.EEXIST, f"{region.name} is already mapped")
        size = int(message["size"])
        if size <= 0:
            raise OSError(errno.EINVAL, "mmap of length 0")
        fds = self.ops.mmap(qf.qp, region, size)
        qf.regions.add(region)
        return {"region": int(region)}, fds

    def _ioctl(self, qf: QueueFile, message: cdev.Message) -> cdev.Message:
        """``uacce_fops_unl_ioctl``: a queue that is not INIT or STARTED answers every command —
        PUT_Q included — with ENXIO; START_Q only from INIT (EINVAL); the rest is the driver's."""
        if qf.state is QState.ZOMBIE:
            raise OSError(errno.ENXIO, "queue was put")
        op = message.get("op")
        if op == "put_q":
            self._put(qf)
            return {}
        if op == "start_q":
            if qf.state is not QState.INIT:
                raise OSError(errno.EINVAL, "START_Q is only valid in INIT")
            self.ops.start_queue(qf.qp)
            qf.state = QState.STARTED
            return {}
        return self.ops.ioctl(qf.qp, message)

    def _put(self, qf: QueueFile) -> None:
        """``uacce_put_queue``: stop if started (the jobs in flight drain, as ``qm_drain_qp``),
        free the hardware queue, keep the file. A no-op on a ZOMBIE (close after PUT_Q)."""
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


def kstrtoul(text: str) -> int:
    """Parse a sysfs write as the kernel's ``kstrtoul(buf, 0, &val)``: an optional ``+``, then
    ``0x`` hex, ``0`` octal or decimal digits, then at most one newline; ValueError otherwise."""
    body = text[:-1] if text.endswith("\n") else text
    body = body.removeprefix("+")
    base = 10
    if body[:2].lower() == "0x" and len(body) > 2:
        base, body = 16, body[2:]
    elif body.startswith("0"):
        base = 8
    if not body or any(c not in "0123456789abcdef"[:base] for c in body.lower()):
        raise ValueError(f"{text!r} is not a base-{base} number")
    return int(body, base)


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
