"""The device's control channel: fault injection and reset, what debugfs and a controller reset
are on real hardware.

A second SOCK_SEQPACKET socket beside the char device, ``<root>/dev/<name>.ctl``, bound
owner-only (mode 0600 inside the 0700 runtime root), and every connection is checked with
SO_PEERCRED: only the device's own uid may command it. One connection carries one request and its
reply, in the char device's JSON message format (``warp.cdev``). A socket rather than a command
file the device polls: delivery is immediate, the sender learns whether the device accepted the
command (an errno otherwise), and a dead device is told apart from a slow one (ECONNREFUSED).
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import final

from warp import cdev

log = logging.getLogger("warp.device")

#: A handler answers one request; the optional action runs after the reply is sent (crash).
Reply = tuple[cdev.Message, Callable[[], None] | None]
Handler = Callable[[cdev.Message], Reply]


@final
class ControlServer:
    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self._handler = handler
        self._listener: socket.socket | None = None

    def serve(self) -> None:
        self._listener = cdev.listen(self.path, 8)
        cdev.accept_on_thread(self._listener, self._serve, "device-control")

    def close(self) -> None:
        if self._listener is not None:
            cdev.stop_listening(self._listener)
            self._listener = None
        self.path.unlink(missing_ok=True)

    def _serve(self, conn: socket.socket) -> None:
        """One request, one reply, then the connection is closed."""
        with conn:
            self._answer(conn)

    def _answer(self, conn: socket.socket) -> None:
        _pid, uid, _gid = cdev.peer_credentials(conn)
        after: Callable[[], None] | None = None
        try:
            received = cdev.receive(conn)
            if received is None:
                return
            message, fds = received
            for fd in fds:
                os.close(fd)
            if uid != os.getuid():
                raise OSError(errno.EPERM, f"uid {uid} may not control this device")
            reply, after = self._handler(message)
        except OSError as exc:
            reply = cdev.error_reply(exc.errno or errno.EIO, exc.strerror or str(exc))
        except (ValueError, KeyError, TypeError) as exc:
            reply = cdev.error_reply(errno.EINVAL, str(exc))
        try:
            cdev.send(conn, reply)
        except OSError:
            pass
        if after is not None:
            after()


def request(path: Path, message: cdev.Message, timeout: float = 30.0) -> cdev.Message:
    """Send one control request and return the reply; raises the ``OSError`` the device answered."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        cdev.send(sock, message)
        received = cdev.receive(sock)
    if received is None:
        raise ConnectionResetError(errno.ECONNRESET, "the device closed the control connection")
    reply, fds = received
    for fd in fds:
        os.close(fd)
    cdev.raise_for_reply(reply)
    return reply
