"""The char-device stand-in: paths under the runtime root and the message protocol on the socket.

A real uacce queue is an open file of ``/dev/<name>``; here it is one SOCK_SEQPACKET connection to
``<root>/dev/<name>`` whose first request, ``open``, completes the open(2) (a failed one hangs up,
leaving no file, see ``warp.device.core``). Each message is a small JSON object (the ioctl or mmap
request, or its reply) and file descriptors travel beside it with SCM_RIGHTS: the process's heap
and page table on open, a region's memfd on mmap, the doorbell kick and interrupt eventfds.
Errors come back as errno names so the caller raises the ``OSError`` the kernel would give.
"""

from __future__ import annotations

import array
import errno
import fcntl
import json
import os
import socket
import stat
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, final

MAX_MESSAGE: Final = 4096
MAX_FDS: Final = 4

Message = dict[str, Any]


@final
@dataclass(frozen=True)
class DevicePaths:
    """Where one device lives under a runtime root: sysfs attributes, char device, debugfs."""

    root: Path
    name: str

    @property
    def sysfs(self) -> Path:
        return self.root / "sys" / "class" / "uacce" / self.name

    @property
    def chardev(self) -> Path:
        return self.root / "dev" / self.name

    @property
    def control(self) -> Path:
        """The device's owner-only control socket (fault injection, reset), beside the char device."""
        return self.root / "dev" / f"{self.name}.ctl"

    @property
    def debugfs(self) -> Path:
        return self.root / "sys" / "kernel" / "debug" / self.name

    @property
    def dfx(self) -> Path:
        return self.debugfs / "dfx"


class Untrusted(PermissionError):
    """A path under the runtime root, or the process behind the char device, is not ours: someone
    else could read every buffer we hand the device, so nothing is handed over."""


def check_trusted(path: Path) -> None:
    """Refuse ``path`` unless it is no link, and is owned by us or root and writable by nobody
    else. Looked at with ``lstat``: the default root's name in /tmp is predictable, so another user
    can plant the whole tree — sysfs files and a listening socket — before our device starts."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise Untrusted(f"refusing {path}: it is a symbolic link")
    if st.st_uid not in (os.geteuid(), 0):
        raise Untrusted(f"refusing {path}: it belongs to uid {st.st_uid}, not to us or root")
    if st.st_mode & 0o022:
        raise Untrusted(f"refusing {path}: others can write to it (mode {stat.S_IMODE(st.st_mode):o})")


def check_peer(sock: socket.socket, path: Path) -> None:
    """Refuse a char device served by a process of another user (``SO_PEERCRED``), before any
    memory is sent to it."""
    _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                          struct.calcsize("3i")))
    if uid not in (os.geteuid(), 0):
        raise Untrusted(f"refusing {path}: the device behind it runs as uid {uid}, not as us or root")


ROOT_LOCK: Final = "device.lock"
"""The file under a runtime root that its device holds an exclusive ``flock`` on for its life."""


def device_running(root: Path) -> bool:
    """Whether a device process holds ``root`` now: its lock cannot be shared. The kernel drops
    the lock however the process ends, so a killed device reads as gone although its files stay."""
    try:
        fd = os.open(root / ROOT_LOCK, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False  # no device ever ran here (or not one of ours)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a shared lock we took
    return False


def default_root() -> Path:
    """``$XDG_RUNTIME_DIR/warpzip``, else ``/tmp/warpzip-$UID``."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return Path(runtime) / "warpzip" if runtime else Path(f"/tmp/warpzip-{os.getuid()}")


def listen(path: Path, backlog: int) -> socket.socket:
    """Bind a SOCK_SEQPACKET socket at ``path``, owner-only (0600) from the first instant: the
    umask is narrowed for the bind itself, so no other user can connect in between."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    old = os.umask(0o177)
    try:
        listener.bind(str(path))
    finally:
        os.umask(old)
    listener.listen(backlog)
    return listener


def accept_on_thread(listener: socket.socket, handle: Callable[[socket.socket], None], name: str) -> threading.Thread:
    """Accept connections on a daemon thread and hand each to ``handle``, until the listener is
    shut down (:func:`stop_listening`): the accept then fails and the thread ends."""
    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            handle(conn)

    thread = threading.Thread(target=accept, name=name, daemon=True)
    thread.start()
    return thread


def stop_listening(listener: socket.socket) -> None:
    """Wake the accepting thread (shutdown) and close the socket."""
    listener.shutdown(socket.SHUT_RDWR)
    listener.close()


def peer_credentials(conn: socket.socket) -> tuple[int, int, int]:
    """``(pid, uid, gid)`` of the process at the other end (SO_PEERCRED), as the kernel knows it."""
    pid, uid, gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    return pid, uid, gid


def send(sock: socket.socket, message: Message, fds: list[int] | None = None) -> None:
    data = json.dumps(message, separators=(",", ":")).encode()
    if fds:
        sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        sock.send(data)


def receive(sock: socket.socket) -> tuple[Message, list[int]] | None:
    """One message and the fds that came with it; ``None`` when the peer closed."""
    data, fds, _flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, MAX_FDS)
    if not data:
        for fd in fds:
            os.close(fd)
        return None
    message = json.loads(data)
    if not isinstance(message, dict):
        raise ValueError("message is not an object")
    return message, fds


def error_reply(code: int, detail: str) -> Message:
    return {"errno": errno.errorcode.get(code, "EIO"), "detail": detail}


def raise_for_reply(reply: Message) -> None:
    """Turn an error reply into the ``OSError`` the matching kernel call would raise."""
    name = reply.get("errno")
    if name is not None:
        code = getattr(errno, str(name), errno.EIO)
        raise OSError(code, f"{os.strerror(code)}: {reply.get('detail', '')}")
