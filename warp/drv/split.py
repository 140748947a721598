"""Jobs larger than one BD, run as a stream of stateful BDs on one queue.

ZIP takes at most ``HZ_MAX_SIZE`` (8 MiB, :data:`warp.abi.MAX_JOB_BYTES`) of input or output per
BD, so UADK sends a larger request as a stream: BDs in order on one ctx, the engine carrying the
zstd context between them (:mod:`warp.device.streams`). A caller still sees one job: one frame out
of a compression, all of the content out of a decompression, in the job's own destination buffer.

:class:`Split` is the sans-I/O half (which BD comes next, what its result means); the driver runs
the BDs (:func:`run_async`, :func:`run_sync`). A device lost between BDs fails the whole job with
:class:`~warp.errors.DeviceLost`, and the runtime re-runs it on the cpu from the start: its input is
still in its source buffer, and the cpu has no BD limit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final, final

from warp import abi, codec
from warp.drv.base import Job, end_stream
from warp.errors import DeviceLost
from warp.mem import Buffer

if TYPE_CHECKING:
    from warp.drv.zip import ZipQueue

MAX_BD: Final = abi.MAX_JOB_BYTES
#: Input per compression BD: small enough that even incompressible input, flushed, fits one BD.
COMPRESS_PIECE: Final = MAX_BD - (MAX_BD >> 7)
assert codec.compress_bound(COMPRESS_PIECE) + 64 <= MAX_BD


def oversized(job: Job) -> bool:
    """Whether ``job`` exceeds one BD and must be split."""
    return not job.mode and (job.length > MAX_BD or job.dst.capacity > MAX_BD)


@final
class Split:
    """The BDs of one oversized job, one at a time: :meth:`next_bd`, then :meth:`take` its result.
    When the job is done, :meth:`next_bd` returns None and the job has been finished."""

    def __init__(self, job: Job, ctx: Buffer) -> None:
        self.job = job
        self._ctx = ctx
        self._at = self._produced = 0
        self._new = True
        self._at_frame_end = True

    def next_bd(self) -> Job | None:
        job = self.job
        if job.finished:
            return None
        if job.abandoned:  # nobody waits: send no more BDs, and let the buffers go
            job.finish(job.status, 0)
            return None
        compress = job.direction is abi.QcType.COMPRESS
        piece = min(COMPRESS_PIECE if compress else MAX_BD, job.length - self._at)
        room = min(MAX_BD, job.dst.capacity - self._produced)
        if room <= 0:
            job.finish(abi.Status.DST_TOO_SMALL, 0)  # the output reached its limit (a bomb stops here)
            return None
        mode = abi.STREAM_STATEFUL | (abi.STREAM_NEW if self._new else 0)
        if compress and self._at + piece >= job.length:
            mode |= abi.STREAM_FINISH
        return Job(direction=job.direction, src=job.src.borrow(self._at, piece), length=piece,
                   dst=job.dst.borrow(self._produced, room), level=job.level, checksum=job.checksum, mode=mode,
                   ctx=self._ctx, dictionary=job.dictionary)

    def take(self, bd: Job) -> None:
        """A BD completed: advance, or finish the job (done, or failed with the BD's status)."""
        job, status = self.job, bd.status
        if status != abi.Status.OK and status not in abi.STREAM_PROGRESS:
            job.finish(status, 0)
            return
        self._at += bd.consumed
        self._produced += bd.produced
        self._new = False
        if job.direction is abi.QcType.COMPRESS:
            if bd.mode & abi.STREAM_FINISH:
                job.finish(abi.Status.OK, self._produced)
            return
        if bd.consumed:
            self._at_frame_end = False
        if status == abi.Status.DECOMP_END:
            self._at_frame_end = self._new = True  # the engine let the context go with the frame
        if self._at >= job.length and status != abi.Status.DECOMP_NO_SPACE:
            job.finish(abi.Status.OK if self._at_frame_end else abi.Status.CORRUPT_INPUT, self._produced)

    def bds(self) -> Iterator[Job]:
        """The BDs in order, each taken back (:meth:`take`) once the caller ran it."""
        while (bd := self.next_bd()) is not None:
            yield bd
            self.take(bd)


async def run_async(queue: ZipQueue, job: Job) -> None:
    """Run ``job``'s BDs on ``queue`` one after another; the job ends finished or failed."""
    try:
        ctx = job.src.heap.alloc(abi.STREAM_CTX_SIZE)
    except Exception as exc:  # noqa: BLE001 -- the job's caller gets it (HeapExhausted: back off)
        job.fail(exc)
        return
    with _stream(job, ctx) as bds:
        for bd in bds:
            await queue.submit(bd)


def run_sync(queue: ZipQueue, job: Job, timeout: float) -> None:
    """:func:`run_async` for a synchronous caller."""
    with _stream(job, job.src.heap.alloc(abi.STREAM_CTX_SIZE)) as bds:
        for bd in bds:
            queue.run([bd], timeout)


@contextlib.contextmanager
def _stream(job: Job, ctx: Buffer) -> Iterator[Iterator[Job]]:
    """The BDs of ``job`` as one stream on ``ctx``, whose record is wiped when they end (the engine
    then lets the context go, :func:`~warp.drv.base.end_stream`). A device lost between or under
    the BDs fails the job over as a whole; the ctx_buf stays out of the pool while that device may
    still write it."""
    try:
        yield Split(job, ctx).bds()
    except DeviceLost as lost:
        if lost.may_write:
            lost.hold(ctx)
        else:
            end_stream(ctx)
        job.fail(lost)
        return
    end_stream(ctx)
