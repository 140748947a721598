"""Engine pools: the compression and the decompression cores of a ZIP device, each a set of
engine threads and the epoll set of doorbells they wait on; and the optional per-BD timing model.

HiSilicon ZIP has separate cores per direction (``HZIP_COMP_CORE_NUM 2``, ``HZIP_DECOMP_CORE_NUM
6`` on Kunpeng 920, reference §2.1), and a queue's direction is fixed in its SQC from ``qc_type``
when it starts (§2.2 "important model facts"). So here a started queue's doorbell joins the epoll
set of its direction's pool, and only that pool's engines serve it: a backlog of one direction
never holds up the other's jobs, as on the hardware.

The timing model exists because real zstd time on a shared machine measures the machine, not the
device: with a fixed cost per BD (``--bd-latency-us``) and/or a modelled engine byte rate
(``--engine-mb-s``) a job takes max(real time, modelled time), so the saturation of a finite pool
(throughput rising with BDs in flight until the pool is busy, then flat) shows the same on any host.
"""

from __future__ import annotations

import select
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, final

from warp import abi

#: Pool names as ``warpzip info`` and the engine DFX ``POOL`` column show them (by ``abi.QcType``).
POOL_NAMES: Final = {abi.QcType.COMPRESS: "compress", abi.QcType.DECOMPRESS: "decompress"}


@final
@dataclass(frozen=True)
class PoolSizes:
    """Engines per pool. Engine ids run compression pool first, then decompression, so a device
    with one pool size for both keeps ids ``0..comp-1`` where the single shared pool had them."""

    comp: int
    decomp: int

    def __post_init__(self) -> None:
        if self.comp < 1 or self.decomp < 1:
            raise ValueError("each engine pool needs at least one engine")

    @property
    def total(self) -> int:
        return self.comp + self.decomp

    def ids(self, kind: abi.QcType) -> range:
        """The engine ids (DFX engine rows) of ``kind``'s pool."""
        return range(self.comp) if kind is abi.QcType.COMPRESS else range(self.comp, self.total)


@final
@dataclass(frozen=True)
class Timing:
    """The per-BD timing model: a job's modelled time is ``latency_us`` plus its uncompressed
    bytes (input of a compression, output of a decompression — the side hardware rates quote)
    at ``mb_s``; 0 turns either part off."""

    latency_us: float = 0.0
    mb_s: float = 0.0

    def __post_init__(self) -> None:
        if self.latency_us < 0 or self.mb_s < 0:
            raise ValueError("the per-BD latency and the engine byte rate must not be negative")

    @property
    def on(self) -> bool:
        return self.latency_us > 0 or self.mb_s > 0

    def cost_ns(self, kind: abi.QcType, consumed: int, produced: int) -> int:
        """The modelled time of one BD that read ``consumed`` and wrote ``produced`` bytes."""
        ns = self.latency_us * 1000
        if self.mb_s > 0:
            ns += (produced if kind is abi.QcType.DECOMPRESS else consumed) * 1000 / self.mb_s
        return int(ns)


@final
class Pool:
    """One direction's engine threads and the epoll set of the doorbells of its started queues.

    Doorbells are registered EPOLLONESHOT: a doorbelled queue goes to exactly one engine of the
    pool (completions stay in order per queue), which rearms it after its turn. ``wake`` is the
    device's close eventfd, registered level-triggered in every pool so one write ends every wait.
    """

    def __init__(self, kind: abi.QcType, ids: range, wake: int, run: Callable[[Pool, int], None]) -> None:
        self.kind = kind
        self.epoll = select.epoll()
        self.epoll.register(wake, select.EPOLLIN)
        self.threads = [threading.Thread(target=run, args=(self, eid), name=f"engine-{eid}-{POOL_NAMES[kind]}",
                                         daemon=True) for eid in ids]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self, fd: int) -> None:
        """A started queue's doorbell joins the pool's ready set."""
        self.epoll.register(fd, select.EPOLLIN | select.EPOLLONESHOT)

    def leave(self, fd: int) -> None:
        """A stopped queue's doorbell leaves it (already gone is fine: stop after close)."""
        try:
            self.epoll.unregister(fd)
        except (OSError, ValueError):
            pass

    def rearm(self, fd: int) -> None:
        """After an engine's turn on the queue: the next doorbell reaches the pool again."""
        try:
            self.epoll.modify(fd, select.EPOLLIN | select.EPOLLONESHOT)
        except (OSError, ValueError):
            pass

    def close(self, timeout: float) -> None:
        """Join the threads (the caller has set the stop flag and written the wake fd), then
        close the epoll set."""
        for thread in self.threads:
            thread.join(timeout=timeout)
        self.epoll.close()
