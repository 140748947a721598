"""One exchange on the data path: what :class:`app.datapath.DataPath` keeps about the request in
progress, and when its answer's heap buffer may go back to the pool."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import final

from app import head as heads
from app import logs
from app.api.body import Session
from warp import Result


@final
class Request:
    """What the data path keeps about the request in progress."""

    __slots__ = ("head", "direction", "session", "started", "status", "size", "driver", "job_started", "sent")

    def __init__(self, head: heads.Head, direction: str, session: Session, started: float) -> None:
        self.head = head
        self.direction = direction
        self.session = session
        self.started = started
        self.status = 500
        self.size = 0
        self.driver = ""
        self.job_started = 0.0
        self.sent = 0

    def log(self, access_log: logging.Logger, peer: str, trusted: frozenset[str]) -> None:
        """The access line (:func:`app.logs.access`), as aiohttp's path writes it too."""
        forwarded = self.head.forwarded_for
        remote = logs.client(peer, forwarded.decode("latin-1") if forwarded else None, trusted)
        logs.access(access_log, remote, "POST", self.head.target.decode("ascii"), self.status, self.sent,
                    time.perf_counter() - self.started)


def release_when_sent(result: Result, transport: asyncio.Transport, delay: float = 0.001) -> None:
    """Release ``result`` once the transport holds none of its bytes: uvloop's ``writelines``
    keeps a view of the memory (not an export of ours, so ``memoryview.release`` cannot tell) until
    the kernel took it, and a buffer back in the pool meanwhile would be overwritten under it."""
    if transport.get_write_buffer_size():
        asyncio.get_running_loop().call_later(delay, release_when_sent, result, transport, min(delay * 2, 1.0))
        return
    result.release()
