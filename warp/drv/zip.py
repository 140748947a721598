"""The ``zip`` driver: jobs go to the simulated accelerator through its SQ/CQ rings.

Async path: :meth:`ZipQueue.submit` appends to ``pending`` and schedules one flush for the end of
the event-loop tick, so the jobs of a tick share a doorbell — or rings it as soon as
``DOORBELL_BATCH`` jobs wait, so the engine starts while the loop is still parsing requests.
Completions arrive as an interrupt (the irq eventfd, watched with
``loop.add_reader``); the handler drains the CQ, returns the slots with one CQ doorbell (priority 1
re-arms the interrupt), and flushes jobs that were waiting for SQ space — a full SQ is
backpressure, never a drop. The char-device socket is watched too: EOF means the device died; TX/RX
stop flags in the DUS mean it stopped the queue for good (a controller reset, or the AEQ handler's
``qm_disable_qp``: UADK's ``-WD_HW_EACCESS``). Either way every job in flight fails with
:class:`DeviceLost` so the caller can re-run it elsewhere, and the driver is dead: the runtime
re-creates its queues on the device (the next probe), as a UADK user re-creates its ctx.

A queue whose job outlives the caller's timeout is reset, as UADK would after ``-WD_ETIMEDOUT``:
:meth:`ZipQueue.stop` sends PUT_Q (the device drains: every doorbelled SQE completes with its real
status, as ``hisi_qm_stop_qp`` → ``qm_drain_qp``; a hung device fails the drain after
``DRAIN_STALL_S`` without progress, resets, and leaves the unfetched SQEs without a CQE), then
:meth:`ZipQueue.close` takes those completions, fails the jobs left without one
(:class:`DeviceLost`: re-run on the cpu) and releases the file. After a PUT_Q the device
answered, it touches none of the queue's buffers, so every job can be re-run with the buffers it
has; a device that did not answer may still write them.
"""

from __future__ import annotations

import asyncio
import select
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Final, final

from warp import abi, uacce, words
from warp.drv import split, sqe
from warp.drv.base import DriverStats, Job, QueueStats
from warp.drv.pool import MsgPool
from warp.errors import DeviceLost, JobTimeout
from warp.ring import CqConsumer, SqProducer
from warp.sched import LeastLoaded, Scheduler
from warp.sva import AddressSpace

#: Jobs written before the SQ doorbell rings even though the event-loop tick is not over: the
#: engine starts on them while the loop is still parsing requests (pipelining the two processes).
#: At 4 KiB and -c32, 4 measured 10-11k req/s against 9k for one doorbell per tick.
DOORBELL_BATCH: Final = 4

#: Seconds a reset waits for the device to answer its PUT_Qs before it fails the jobs over: a
#: device that is alive answers in well under a millisecond; a stopped one not for CONTROL_TIMEOUT.
RESET_GRACE: Final = 0.25

#: CQ polls before a synchronous caller sleeps on the interrupt (UADK busy-polls forever: PR #236).
SPIN_POLLS: Final = 200


@final
class ZipQueue:
    """One hardware queue (a UADK ctx) and the jobs in its SQ."""

    def __init__(self, device: uacce.Device, space: AddressSpace, direction: abi.QcType,
                 on_lost: Callable[[], None] = lambda: None, doorbell_batch: int = DOORBELL_BATCH) -> None:
        self.handle = uacce.QueueHandle(device, space, direction)
        self._on_lost = on_lost
        self.doorbell_batch = doorbell_batch
        self.direction = direction
        self.sq = SqProducer()
        self.cq = CqConsumer()
        self.pool = MsgPool()
        self._sync_lock = threading.Lock()
        self.pending: deque[Job] = deque()
        self.alive = True
        self.lost_reason = DeviceLost("queue is gone")
        self._put_sent = False
        self._may_write = False  # set by stop(): the device did not answer the PUT_Q
        self._let_go = False  # set by stop(): it answered, or its file is gone
        self.submitted = self.completed = self.failed = self.doorbells = 0
        self._words = self.handle.view.sq
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flush_scheduled = False
        self.handle.ring(abi.DoorbellCmd.CQ, 0, priority=1)  # arm the interrupt

    @property
    def load(self) -> int:
        return self.sq.used + len(self.pending)

    # ---- async -----------------------------------------------------------------------------
    def submit(self, job: Job) -> asyncio.Future[Job]:
        future = self._enqueue(job)
        if len(self.pending) >= self.doorbell_batch:
            self._push_pending()  # start the device on these while the loop parses more requests
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            future.get_loop().call_soon(self._flush)
        return future

    def submit_many(self, jobs: list[Job]) -> None:
        """The batch API: every job written, then one doorbell (as many as the SQ has room for;
        the rest follow as completions free slots)."""
        for job in jobs:
            self._enqueue(job)
        self._push_pending()

    def _enqueue(self, job: Job) -> asyncio.Future[Job]:
        loop = self._loop
        if loop is None or loop.is_closed():
            # The first job, or the first since the loop this queue served ended (one
            # asyncio.run after another): bind to the caller's loop. Asking for it costs a
            # getpid(), so it is not asked on every job.
            loop = asyncio.get_running_loop()
            self._attach(loop)
        if not self.alive:
            raise self.lost_reason
        job.future = loop.create_future()
        self.pending.append(job)
        return job.future

    def _attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._detach()
        self._flush_scheduled = False  # a flush scheduled on a loop that ended never ran
        self._loop = loop
        loop.add_reader(self.handle.irq_fd, self._on_interrupt)
        loop.add_reader(self.handle.sock.fileno(), self._on_hangup)

    def _detach(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self.handle.irq_fd)
            self._loop.remove_reader(self.handle.sock.fileno())
        self._loop = None

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.alive:
            self._push_pending()

    def _on_interrupt(self) -> None:
        if self._take_interrupt() and self.pending:
            self._push_pending()

    def _take_interrupt(self) -> bool:
        """Acknowledge the interrupt and drain the CQ; False if the queue is stopped now."""
        try:
            self.handle.irq_read()
        except BlockingIOError:
            pass
        self._drain()
        if self.handle.view.rx_stopped:
            # The device stopped the queue (a reset, an AEQ event) and woke us to say so: what it
            # completed is drained above, everything still in the SQ or pending fails over now.
            self._stopped()
            return False
        return True

    def _on_hangup(self) -> None:
        self._lost()

    # ---- sync ------------------------------------------------------------------------------
    def run(self, jobs: list[Job], timeout: float) -> None:
        """Synchronous jobs, under the ctx's lock (UADK's sync mode holds ``ctx->lock`` across send
        and receive): another thread's caller waits for the queue instead of racing for its SQ,
        its pool and its completions."""
        with self._sync_lock:
            self._run(jobs, timeout)

    def _run(self, jobs: list[Job], timeout: float) -> None:
        if self._loop is not None:
            if not self._loop.is_closed():
                raise RuntimeError("this queue is driven by a running event loop; use submit()")
            self._detach()  # that loop has ended: the queue is free for synchronous jobs again
        if not self.alive:
            raise self.lost_reason
        self.pending.extend(jobs)
        deadline = time.monotonic() + timeout
        poller = select.poll()
        poller.register(self.handle.irq_fd, select.POLLIN)
        poller.register(self.handle.sock.fileno(), select.POLLIN)
        while not all(job.finished for job in jobs):
            self._push_pending()
            if any(self._drain() for _ in range(SPIN_POLLS)):
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:  # the caller resets the queues (a sync caller has no loop to wait on)
                raise JobTimeout(f"{sum(not j.finished for j in jobs)} job(s) still running after {timeout} s")
            for fd, _event in poller.poll(remaining * 1000):
                if fd == self.handle.irq_fd:
                    self._take_interrupt()
                else:
                    self._lost()
        if any(job.status < 0 for job in jobs):
            raise self.lost_reason  # some job has no status: the queue was lost under it

    # ---- ring work -------------------------------------------------------------------------
    def _push_pending(self) -> None:
        """Write as many pending jobs as the SQ takes, then ring one doorbell for all of them."""
        if self.handle.view.tx_stopped:
            self._stopped()  # UADK: "hw error happened before qm send"
            return
        written = 0
        while self.pending and self.sq.free:
            job = self.pending.popleft()
            slot = self.sq.push()
            sqe.write(self._words, slot, job, self.pool.take(job))
            written += 1
        if written:
            self.handle.ring(abi.DoorbellCmd.SQ, self.sq.tail)
            self.submitted += written
            self.doorbells += 1

    def _drain(self) -> int:
        """Consume every valid CQE; the result is read from the SQE the CQE points at."""
        count = 0
        cq, w = self.handle.view.cq, self._words
        while (slot := self.cq.poll(cq)) is not None:
            base = slot * words.SQ_WORDS
            job = self.pool.put(w[base + words.TAG])
            status = w[base + words.STATUS] & 0xFF
            produced = w[base + words.PRODUCED]
            count += 1
            if job is not None:
                if status and status not in words.PROGRESS:
                    self.failed += 1
                if job.mode or job.algorithm is not sqe.ZSTD:
                    job.consumed = w[base + words.CONSUMED]
                    job.literals, job.overflow = w[base + words.LIT_NUM], w[base + words.LIT_OVERFLOW]
                job.finish(status, produced)
        if count:
            self.sq.retire(count)
            self.completed += count
            self.handle.ring(abi.DoorbellCmd.CQ, self.cq.head, priority=1)
        return count

    def _stopped(self) -> None:
        """The device is alive but disabled the queue (TX/RX stop flags): fail over like a loss,
        telling callers the device may still finish writing what it had started."""
        self._lost(may_write=True)

    def _lost(self, may_write: bool = False) -> None:
        """The device is gone: fail every job it held so callers can run them elsewhere."""
        if not self.alive:
            return
        self.alive = False
        self.lost_reason = DeviceLost("the device may still be writing the job's buffers" if may_write
                                      else "the device let go of the queue with the job in flight", may_write)
        self._on_lost()
        self._detach()
        lost = self.pool.clear() + list(self.pending)
        self.pending.clear()
        for job in lost:
            job.fail(self.lost_reason)

    def stop(self) -> None:
        """PUT_Q (``hisi_qm_stop_qp``), once — also on a queue already failed over (isolation):
        its answer is what lets the held destinations go back to the pool. Blocking: the async
        reset runs it in a thread, after :meth:`prepare_stop` took the queue's readers off the
        loop, so nothing else reads the socket meanwhile. A device that does not answer in
        ``CONTROL_TIMEOUT`` may still write our buffers; one whose file is gone writes nothing."""
        if self._put_sent:
            return
        self._put_sent = True
        try:
            self.handle.put()
        except TimeoutError:
            self._may_write = True
            return
        except OSError:
            if self.handle.closed:  # we closed the file under the request: no answer came
                self._may_write = True
                return
        self._let_go = True

    def prepare_stop(self) -> None:
        """On the loop's thread, before :meth:`stop` runs in another."""
        self._detach()

    def close(self) -> None:
        """Stop the queue if that is not done, complete what the device completed (the drain),
        fail the rest (a failed drain's unfetched SQEs, for the caller to re-run), release the file."""
        self._detach()
        self.stop()
        if self.alive:
            self._drain()
        self._lost(self._may_write)
        if self._let_go:
            self.lost_reason.let_go()  # the device answered the PUT_Q or is gone: it writes nothing now
        self.handle.close()

    def statistics(self) -> QueueStats:
        return QueueStats(sqn=self.handle.sqn, pasid=self.handle.pasid, direction=self.direction, alive=self.alive,
                          sq_used=self.sq.used, pending=len(self.pending), submitted=self.submitted,
                          completed=self.completed, failed=self.failed, doorbells=self.doorbells)

    def fail_over(self) -> None:
        """The device does not answer the reset: fail the jobs now (their re-runs get fresh
        destinations) instead of after ``CONTROL_TIMEOUT``; the PUT_Q goes on in its thread."""
        self._lost(may_write=True)


@final
class ZipDriver:
    """All of this process's queues on one device, a queue per direction at least."""

    name = "zip"

    def __init__(self, device: uacce.Device, space: AddressSpace, queues: int = 1,
                 scheduler: Scheduler | None = None, doorbell_batch: int = DOORBELL_BATCH) -> None:
        self.device = device
        self.scheduler: Scheduler = scheduler or LeastLoaded()
        self.queues: dict[abi.QcType, list[ZipQueue]] = {d: [] for d in abi.QcType}
        self._splits: set[asyncio.Task[None]] = set()  # the tasks running oversized jobs' BDs
        self._alive = True
        try:
            for direction in abi.QcType:
                for _ in range(queues):
                    self.queues[direction].append(ZipQueue(device, space, direction, self._queue_lost,
                                                             doorbell_batch))
        except BaseException:
            self.close()
            raise

    @property
    def alive(self) -> bool:
        """False once any queue lost the device: a dead device process takes all queues."""
        return self._alive

    def _queue_lost(self) -> None:
        self._alive = False

    def submit(self, job: Job) -> asyncio.Future[Job]:
        queue = self.scheduler.pick(self.queues[job.direction], job.key)
        if split.oversized(job):
            return self._submit_split(queue, job)
        return queue.submit(job)

    def _submit_split(self, queue: ZipQueue, job: Job) -> asyncio.Future[Job]:
        """A job over one BD (:mod:`warp.drv.split`): its BDs run in a task; its future is the job's."""
        if not queue.alive:
            raise queue.lost_reason
        loop = asyncio.get_running_loop()
        job.future = loop.create_future()
        task = loop.create_task(split.run_async(queue, job))
        self._splits.add(task)
        task.add_done_callback(self._splits.discard)
        return job.future

    def submit_many(self, jobs: list[Job]) -> None:
        for queues, mine in self._by_direction(jobs):
            small = [job for job in mine if not split.oversized(job)]
            for job in mine:
                if split.oversized(job):
                    self.submit(job)
            if small:
                self.scheduler.pick(queues, small[0].key).submit_many(small)

    def run(self, jobs: list[Job], timeout: float) -> None:
        for queues, mine in self._by_direction(jobs):
            queue = self.scheduler.pick(queues, mine[0].key)
            small = [job for job in mine if not split.oversized(job)]
            if small:
                queue.run(small, timeout)
            for job in mine:
                if split.oversized(job):
                    split.run_sync(queue, job, timeout)

    def _by_direction(self, jobs: list[Job]) -> Iterator[tuple[list[ZipQueue], list[Job]]]:
        """A batch goes to one queue per direction, under one doorbell there."""
        for direction, queues in self.queues.items():
            mine = [job for job in jobs if job.direction is direction]
            if mine:
                yield queues, mine

    async def areset(self) -> None:
        """Reset every queue without blocking the event loop: the PUT_Qs run in threads, the
        completions are taken here, on the loop's thread, which owns the jobs' futures. A device
        that has not answered within ``RESET_GRACE`` (stopped, or hung in its control path) gets
        its jobs failed over at once; its PUT_Qs may take up to ``CONTROL_TIMEOUT``, and only an
        answer lets the destinations it might still write go back to the pool."""
        self._alive = False
        queues = self.all_queues()
        for queue in queues:
            queue.prepare_stop()
        puts = [asyncio.ensure_future(asyncio.to_thread(queue.stop)) for queue in queues]
        _, unanswered = await asyncio.wait(puts, timeout=RESET_GRACE)
        try:
            if unanswered:  # a stopped device: its jobs go elsewhere now, not after CONTROL_TIMEOUT
                for queue in queues:
                    queue.fail_over()
                await asyncio.wait(unanswered)
        finally:
            self.close()  # also when the loop is going away: a PUT_Q cut short lets nothing go

    def forget(self) -> None:
        """In a forked child (:meth:`warp.Runtime.reset_in_child`): close the child's references
        to the queue files, so the parent's close releases its queues; nothing else. A PUT_Q would
        stop the parent's queue, the rings are not mapped here (``MADV_DONTFORK``), and the event
        loop's epoll set is the parent's too: removing the queue's readers would remove them there."""
        self._alive = False
        for queue in self.all_queues():
            queue.handle.sock.close()

    def all_queues(self) -> list[ZipQueue]:
        return [q for qs in self.queues.values() for q in qs]

    def statistics(self) -> DriverStats:
        queues = self.all_queues()
        per_queue = tuple(q.statistics() for q in queues)
        return DriverStats(name=self.name, alive=self._alive, device=self.device.name, queues=len(queues),
                           sq_depth=sum(q.sq_used for q in per_queue),
                           sq_capacity=sum(q.sq.depth - 1 for q in queues),
                           submitted=sum(q.submitted for q in per_queue),
                           completed=sum(q.completed for q in per_queue),
                           failed=sum(q.failed for q in per_queue), doorbells=sum(q.doorbells for q in per_queue),
                           per_queue=per_queue)

    def close(self) -> None:
        for queue in self.all_queues():
            queue.close()
