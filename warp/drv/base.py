"""What every driver implements, and the job record that travels through it.

A job names SVA buffers, never Python bytes: the ``zip`` driver hands their addresses to the
device, the ``cpu`` driver runs zstd on the same memory in a thread. Either way the result lands in
the destination buffer, so the session above does not care which driver ran it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol, final

from warp import abi
from warp.dictionary import Dictionary
from warp.mem import Buffer


@final
@dataclass(eq=False)
class Job:
    """One compression or decompression of ``src[:length]`` into ``dst``.

    A caller that stops waiting (cancelled, timed out) calls :meth:`abandon`; the driver then frees
    the buffers when the engine is really done with them, never earlier.
    """

    direction: abi.QcType
    src: Buffer
    length: int
    dst: Buffer
    level: int = 3
    checksum: bool = False
    status: int = -1
    produced: int = 0
    future: asyncio.Future[Job] | None = None
    abandoned: bool = False
    finished: bool = field(default=False)
    #: Why the driver could not run the job (set by :meth:`fail`): sync callers have no future.
    error: BaseException | None = None
    #: The runtime's timeout for the attempt in progress; cancelled when the caller abandons the job.
    timer: asyncio.TimerHandle | None = None
    #: A stream BD (:mod:`warp.stream`): its dw7 bits (``abi.STREAM_*``, 0 for a stateless job), its
    #: session's ctx_buf, and the input the engine consumed.
    mode: int = 0
    ctx: Buffer | None = None
    consumed: int = 0
    #: Set when the session closed with this BD in flight: the ctx_buf goes back with the job's buffers.
    owns_ctx: bool = False
    #: The ctx its session was given (:class:`warp.sched.SessionRoundRobin`); None: the scheduler picks.
    key: int | None = None
    #: lz77_zstd (:mod:`warp.lz77`): the SQE's alg code and window code; the engine's literal
    #: count (dw2) and litLength overflow word (dw31), read back with ``produced`` (the sequences).
    algorithm: abi.Alg = abi.Alg.ZSTD
    window: int = 0
    literals: int = 0
    overflow: int = 0
    #: The zstd dictionary the job compresses or decompresses with (not the job's to free).
    dictionary: Dictionary | None = None

    def finish(self, status: int, produced: int) -> None:
        """Called by the driver once the engine has let go of the buffers."""
        self.status, self.produced, self.finished = status, produced, True
        if self.abandoned:
            self._free()
        elif self.future is not None and not self.future.done():
            self.future.set_result(self)

    def fail(self, exc: BaseException) -> None:
        """The driver could not run the job (device lost); buffers are free to reuse."""
        self.finished, self.error = True, exc
        if self.abandoned:
            self._free()
        elif self.future is not None and not self.future.done():
            self.future.set_exception(exc)

    def abandon(self) -> None:
        """The caller gives up on the job; buffers are released now or when the engine finishes."""
        self.abandoned = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.finished:
            self._free()

    def rearm(self, dst: Buffer) -> None:
        """Ready the job for another attempt on another driver, writing into ``dst``: the same
        destination, or a fresh one when the device that let the job down may still write the old."""
        self.dst = dst
        self.finished, self.future, self.status, self.produced, self.error = False, None, -1, 0, None

    def discard(self) -> None:
        """Free the buffers of a job no driver was given (a batch that failed while loading)."""
        self._free()

    def _free(self) -> None:
        self.src.release()
        self.dst.release()
        if self.owns_ctx and self.ctx is not None:
            end_stream(self.ctx)


def end_stream(ctx: Buffer) -> None:
    """Free a stream session's ctx_buf, its record wiped first: the engine holds each stream's
    context in device memory and lets go of those whose record is gone when it needs the room
    (:mod:`warp.device.streams`), so an abandoned stream does not hold it until the queue is put."""
    ctx.write(0, bytes(abi.STREAM_RECORD_SIZE))
    ctx.release()


@final
@dataclass(frozen=True)
class QueueStats:
    """A snapshot of one hardware queue of this process (``GET /device`` lists them)."""

    sqn: int
    pasid: int
    direction: abi.QcType
    alive: bool
    sq_used: int  # SQEs written and not yet completed
    pending: int  # jobs waiting for SQ space (or for the end of the loop tick)
    submitted: int
    completed: int
    failed: int
    doorbells: int


@final
@dataclass(frozen=True)
class DriverStats:
    """A snapshot of one driver's counters (trio-style frozen record): what readers (metrics,
    ``/healthz``, ``/device``) use instead of the driver's attributes."""

    name: str
    alive: bool
    #: The uacce device the driver runs on; None for the cpu.
    device: str | None
    queues: int
    sq_depth: int
    sq_capacity: int
    submitted: int
    completed: int
    failed: int
    doorbells: int
    #: Per hardware queue (empty for the cpu, whose workers are threads, not queues).
    per_queue: tuple[QueueStats, ...] = ()


class Driver(Protocol):
    """The interface between sessions and a device."""

    name: str

    def submit(self, job: Job) -> asyncio.Future[Job]:
        """Queue ``job`` from the running event loop; jobs submitted in one tick share a doorbell."""
        ...

    def submit_many(self, jobs: list[Job]) -> None:
        """:meth:`submit` for a batch (each job's future is ``job.future``): the zip driver writes
        them all, then rings one doorbell."""
        ...

    def run(self, jobs: list[Job], timeout: float) -> None:
        """Run ``jobs`` synchronously (one doorbell), returning when every one has finished."""
        ...

    @property
    def alive(self) -> bool: ...

    def statistics(self) -> DriverStats: ...

    def close(self) -> None: ...
