"""The runtime: the UADK init step — SVA heap, queues on a device, the cpu fallback — and what
happens to a job between a session and a driver.

Results are views into pooled SVA buffers (no copy out of the device's destination pages); they
must be released — use them as context managers. Whatever happens to the caller (error,
cancellation, timeout), every buffer goes back to the pool exactly once: either here, or by the
driver when the engine has finished with it.

A job that outlives the runtime's ``timeout`` on the device resets the device's queues (PUT_Q on
each, see :mod:`warp.drv.zip`): the jobs the drain completed end as they ran, the rest are lost and re-run on the
cpu, the timed-out one among them, so a hung engine costs callers one timeout, not their request.
New jobs go to the cpu until the next probe finds the device. Only a job that also outlives the
timeout on the cpu fails with :class:`JobTimeout`. The rules are :mod:`warp.failover`'s.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final, Literal, final, overload

from warp import abi, atfork, cdev, uacce
from warp.dictionary import Dictionary, Resolver
from warp.drv.base import Driver, Job
from warp.drv.cpu import CpuDriver
from warp.drv.zip import DOORBELL_BATCH, ZipDriver
from warp.errors import DeviceLost, JobFailed, JobTimeout, NoDevice, RuntimeClosed
from warp.failover import Expiry, Failover
from warp.mem import Buffer, SvaHeap
from warp.probe import Prober
from warp.result import Result, RuntimeStats
from warp.sched import POLICIES, Scheduler
from warp.session import AnyCompressor, Bytes, Compressor, Decompressor, Lz77Compressor, make_compressor
from warp.stream import CompressStream, DecompressStream
from warp.sva import AddressSpace
from warp.zstream import DEFAULT_MEMORY, ContextMemory

DEFAULT_HEAP: Final = 1 << 30
DEFAULT_TIMEOUT: Final = 30.0

#: Takes a job's outcome: its result, or the exception that ended it.
Done = Callable[["Result | BaseException"], None]


@final
class Runtime:
    """One process's accelerator runtime: SVA heap, queues on a device, the cpu fallback."""

    def __init__(self, root: str | os.PathLike[str] | None = None, *, driver: str = "auto", queues: int = 1,
                 heap_size: int = DEFAULT_HEAP, prefault: bool = True, cpu_threads: int = 2,
                 timeout: float = DEFAULT_TIMEOUT, doorbell_batch: int = DOORBELL_BATCH,
                 sched: str = "least-loaded", stream_memory: int = DEFAULT_MEMORY) -> None:
        if driver not in ("auto", "zip", "cpu"):
            raise ValueError("driver must be auto, zip or cpu")
        if sched not in POLICIES:
            raise ValueError(f"sched must be one of {', '.join(POLICIES)}")
        #: Which queue a job goes to (:mod:`warp.sched`); kept across the drivers a probe opens.
        self.scheduler: Scheduler = POLICIES[sched]()
        self.root = Path(root) if root is not None else cdev.default_root()
        self.timeout = timeout
        self.space = AddressSpace(heap_size)
        self.heap = SvaHeap(self.space, prefault=prefault)
        self.cpu = CpuDriver(self.space, threads=cpu_threads)
        #: What the cpu driver's stream contexts may hold together (the device bounds its own).
        self.stream_memory = ContextMemory(stream_memory)
        self.zip: ZipDriver | None = None
        self.fallback_jobs = 0
        self.queue_resets = 0
        self.closed = False
        self._owner = os.getpid()
        self._closed_why = "the runtime is closed"
        self._resetting: set[asyncio.Task[None]] = set()
        self.doorbell_batch = doorbell_batch
        self._compressors: dict[tuple[int, bool, str], AnyCompressor] = {}
        #: Losses whose destination buffers the device may still write (released when it lets go).
        self._quarantine: list[DeviceLost] = []
        self.queue_count = queues  # per direction, on every device driver it opens
        self._use_device = driver != "cpu"
        self._failover = Failover()
        self._prober = Prober(lambda: self._open_zip(self.queue_count), self._failover)
        self.device_error: str | None = None
        if driver != "cpu":
            try:
                self.zip = self._open_zip(queues)
            except (NoDevice, OSError) as exc:
                self.device_error = str(exc)  # why the runtime started on the cpu (e.g. a root not ours)
                if driver == "zip":
                    self.close()
                    raise NoDevice(f"no usable zstd accelerator under {self.root}: {exc}") from exc
        atfork.track(self)

    def _open_zip(self, queues: int) -> ZipDriver:
        found = uacce.devices(self.root, "zstd")
        if not found:
            raise NoDevice("no device offers zstd")
        return ZipDriver(found[0], self.space, queues=queues, scheduler=self.scheduler,
                         doorbell_batch=self.doorbell_batch)

    @property
    def driver(self) -> Driver:
        """The driver new jobs go to: the device while it lives, else the cpu — and the device
        again once a probe finds one (:mod:`warp.probe`: in the background when called from an
        event loop, so a device that does not answer never stalls the loop)."""
        zip_driver = self.zip
        if zip_driver is not None and zip_driver.alive:
            return zip_driver
        if self._use_device and not self.closed:
            fresh = self._prober.take(background=_in_event_loop())
            if fresh is not None:
                self.zip = fresh
                if zip_driver is not None:
                    self._retire(zip_driver)  # the dead or stopped queues: PUT_Q where the device still answers
                return fresh
        return self.cpu

    @overload
    def compressor(self, level: int = 3, checksum: bool = False, algorithm: Literal["zstd"] = "zstd",
                   dictionary: Dictionary | None = None) -> Compressor: ...
    @overload
    def compressor(self, level: int, checksum: bool, algorithm: Literal["lz77_zstd"]) -> Lz77Compressor: ...
    def compressor(self, level: int = 3, checksum: bool = False, algorithm: str = "zstd",
                   dictionary: Dictionary | None = None) -> AnyCompressor:
        """A session for these parameters (lz77_zstd: :mod:`warp.lz77`). Under a per-job scheduler
        sessions hold no state, so one per parameter set is reused (the service asks for one per
        request), not per dictionary (which may go); under ``sched="session"`` each is new and
        takes the next ctx, as UADK's do."""
        if self.scheduler.per_session or dictionary is not None:
            return make_compressor(self, level, checksum, algorithm, dictionary)
        key = (level, checksum, algorithm)
        if key not in self._compressors:
            self._compressors[key] = make_compressor(self, level, checksum, algorithm)
        return self._compressors[key]

    def decompressor(self, max_output: int, dictionaries: Resolver | None = None) -> Decompressor:
        return Decompressor(self, max_output, dictionaries)

    def dictionary(self, data: Bytes) -> Dictionary:  # copied once into the heap (:mod:`warp.dictionary`)
        return Dictionary(self.load(data), len(data))

    def compress_stream(self, level: int = 3, checksum: bool = False,
                        dictionary: Dictionary | None = None) -> CompressStream:
        """A stream session: one zstd frame across many calls (:mod:`warp.stream`)."""
        return CompressStream(self, level, checksum, dictionary=dictionary)

    def decompress_stream(self, dictionaries: Resolver | None = None) -> DecompressStream:
        """A stream session decompressing input fed in pieces, output in bounded pieces."""
        return DecompressStream(self, dictionaries=dictionaries)

    def compress(self, data: Bytes, level: int = 3, checksum: bool = False) -> bytes:
        """One zstd frame of ``data`` as ``bytes``; the zero-copy way is :meth:`compressor` and a view."""
        with self.compressor(level, checksum).compress(data) as frame:
            return bytes(frame.view)

    def decompress(self, data: Bytes, max_output: int | None = None) -> bytes:
        """``data``'s content as ``bytes``; over ``max_output`` (default: heap / 4) fails (:class:`JobFailed`)."""
        limit = self.space.size // 4 if max_output is None else max_output
        with self.decompressor(limit).decompress(data) as content:
            return bytes(content.view)

    def alloc(self, size: int) -> Buffer:
        return self.heap.alloc(size)

    def load(self, data: Bytes) -> Buffer:
        """Copy ``data`` into a fresh SVA buffer (the one copy a caller with plain bytes pays)."""
        buffer = self.heap.alloc(len(data))
        buffer.write(0, data)
        return buffer

    async def execute(self, job: Job) -> Result:
        """Run a job on the current driver; re-run it on the cpu if the device dies under it,
        stops its queue, or fails it with a hardware error — the caller never sees those."""
        return await _outcome(job, lambda done: self.submit(job, done))

    async def execute_many(self, jobs: list[Job]) -> list[Result]:
        """The batch API: the jobs are written together and started with one doorbell per queue,
        then each is settled as :meth:`execute` settles one. If any fails, the others' results are
        released and the first error is raised."""
        driver = self._driver_for(jobs)
        try:
            driver.submit_many(jobs)
        except DeviceLost:
            pass  # a job the queue did not take is submitted alone below, and fails over from there

        def settle(job: Job) -> Awaitable[Result]:
            return _outcome(job, lambda done: self._attempt(driver, job, done, first=True))

        return _collect(await asyncio.gather(*(settle(job) for job in jobs), return_exceptions=True))

    def submit(self, job: Job, done: Done) -> None:
        """:meth:`execute` without a task: ``done`` is called once, from the event loop, with the
        job's :class:`Result` or the exception :meth:`execute` would raise. A caller that stops
        waiting calls ``job.abandon()``; ``done`` is then never called. The service's data path
        uses this: a task per request cost more than the rest of the hand-off."""
        self._attempt(self._driver_for([job]), job, done, first=True)

    def _attempt(self, driver: Driver, job: Job, done: Done, first: bool) -> None:
        """Submit (unless a batch did) and arm the timeout; :meth:`_attempted` takes the outcome.
        Past the timeout the device is reset (which ends the job one way or another) and the cpu
        fails the job — the buffers stay with the job until its driver is done with them."""
        try:
            future = job.future if job.future is not None else driver.submit(job)
        except DeviceLost as exc:
            self._attempted(driver, job, done, first, exc)
            return
        timer = future.get_loop().call_later(self.timeout, self._expire, driver, future)
        job.timer = timer
        future.add_done_callback(lambda settled: self._settled(driver, job, done, first, settled))

    def _settled(self, driver: Driver, job: Job, done: Done, first: bool, future: asyncio.Future[Job]) -> None:
        if job.timer is not None:
            job.timer.cancel()
            job.timer = None
        if job.abandoned:
            return
        self._attempted(driver, job, done, first, None if future.cancelled() else future.exception())

    def _attempted(self, driver: Driver, job: Job, done: Done, first: bool, exc: BaseException | None) -> None:
        """One attempt ended (``exc``: its driver failed it): a cpu re-run if the device let it down, else ``done``."""
        lost = exc if isinstance(exc, DeviceLost) else None
        try:
            if exc is not None and (lost is None or not first):
                raise exc
            if first and self._failover.rerun(job.status, lost is not None):
                self._rearm_for_cpu(job, lost)
                self._attempt(self.cpu, job, done, first=False)
                return
            outcome: Result | BaseException = self._result(job)
        except JobFailed as failed:
            outcome = failed
        except BaseException as error:  # noqa: B036 -- handed to the caller, as execute() would raise it
            job.abandon()
            outcome = error
        done(outcome)

    def execute_sync(self, job: Job) -> Result:
        """:meth:`execute` for callers without an event loop."""
        return self.execute_many_sync([job])[0]

    def execute_many_sync(self, jobs: list[Job]) -> list[Result]:
        """:meth:`execute_many` for callers without an event loop."""
        driver = self._driver_for(jobs)
        try:
            lost = None
            try:
                driver.run(jobs, self.timeout)
            except DeviceLost as exc:
                lost = exc
            except JobTimeout:
                if self._expiry(driver) is not Expiry.RESET or not isinstance(driver, ZipDriver):
                    raise
                self._take_out(driver).close()  # the reset, in line: no loop to keep going
            again = self._reruns(jobs, lost)
            if again:
                self.cpu.run(again, self.timeout)
        except BaseException:
            for job in jobs:
                job.abandon()
            raise
        outcomes: list[Result | BaseException] = []
        for job in jobs:
            try:
                outcomes.append(self._result(job))
            except JobFailed as exc:
                outcomes.append(exc)
        return _collect(outcomes)

    def _driver_for(self, jobs: list[Job]) -> Driver:
        """The driver new jobs go to; a closed runtime refuses them (and frees their buffers)."""
        if self.closed:
            for job in jobs:
                job.discard()
            raise RuntimeClosed(self._closed_why)
        return self.driver

    def _take_out(self, driver: ZipDriver) -> ZipDriver:
        """A job outlived the timeout on ``driver``: the cpu takes new jobs until a probe opens fresh queues."""
        self.zip = None
        self.queue_resets += 1
        self._prober.postpone()
        return driver

    def _retire(self, driver: ZipDriver) -> None:
        """Put queues the runtime no longer uses: in the background on a loop (a stopped device
        answers PUT_Q only after ``CONTROL_TIMEOUT``), in line without one."""
        if _in_event_loop():
            task = asyncio.get_running_loop().create_task(driver.areset())
            self._resetting.add(task)
            task.add_done_callback(self._resetting.discard)
        else:
            driver.close()

    def _reruns(self, jobs: list[Job], lost: DeviceLost | None) -> list[Job]:
        """The jobs of a sync batch that run again on the cpu (:meth:`Failover.rerun`), made
        ready to; ``lost`` is the batch's loss, if the device lost it."""
        again = []
        for job in jobs:
            why = _lost_by(job, lost)
            if self._failover.rerun(job.status, why is not None):
                self._rearm_for_cpu(job, why)
                again.append(job)
        return again

    def _rearm_for_cpu(self, job: Job, lost: DeviceLost | None) -> None:
        """Make a job the failover policy re-runs ready for the cpu.

        A device that is alive may still write the old destination: it is kept out of the pool
        until the device lets go of the queue (answers its PUT_Q, or dies), and the re-run gets a
        fresh one."""
        if self.closed:  # the close failed the job over; there is no cpu left to re-run it on
            raise RuntimeClosed("the runtime closed with the job in flight")
        dst = job.dst
        if lost is not None and lost.may_write:
            dst = self.heap.alloc(job.dst.capacity)
            lost.hold(job.dst)
            if lost not in self._quarantine:
                self._quarantine = [held for held in self._quarantine if held.held] + [lost]
        self.fallback_jobs += 1
        job.rearm(dst)

    def _expiry(self, driver: Driver) -> Expiry:
        return self._failover.expiry(on_cpu=driver is self.cpu, on_device_in_use=driver is self.zip)

    def _expire(self, driver: Driver, future: asyncio.Future[Job]) -> None:
        """A job's timeout fired (:meth:`Failover.expiry` says what that costs)."""
        if future.done():
            return
        expiry = self._expiry(driver)
        if expiry is Expiry.RESET and isinstance(driver, ZipDriver):
            self._retire(self._take_out(driver))  # in the background: the loop keeps serving
        elif expiry is Expiry.FAIL:
            future.set_exception(JobTimeout(f"job did not complete within {self.timeout} s"))

    def _result(self, job: Job) -> Result:
        job.src.release()
        if job.status != abi.Status.OK:
            job.dst.release()
            raise JobFailed(job.status, _describe(job.status))
        return Result(job)

    def statistics(self) -> RuntimeStats:
        current = self.driver.name  # first: asking may move the runtime onto a device a probe found
        drivers = [self.cpu.statistics()]
        if self.zip is not None:
            drivers.insert(0, self.zip.statistics())
        return RuntimeStats(driver=current, fallback_jobs=self.fallback_jobs,
                            queue_resets=self.queue_resets, heap=self.heap.statistics(), drivers=tuple(drivers))

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reset_in_child(self) -> ZipDriver | None:
        """In a forked child (:mod:`warp.atfork`, UADK's ``wd_comp_clear_status``): closed for good, its
        queues the parent's (:meth:`ZipDriver.forget`); the child opens its own, as UADK users init again."""
        self.closed = True
        self._closed_why = f"this runtime belongs to process {self._owner}: after fork, open a new one"
        self._quarantine.clear()  # destinations in the parent's heap: nothing of the child's
        inherited, self.zip = self.zip, None
        if inherited is not None:
            inherited.forget()
        return inherited  # its ring mappings are holes here: never collected, never unmapped

    def close(self) -> None:
        """Put the queues and stop the cpu pool. Jobs still in flight end with
        :class:`RuntimeClosed`: a service that stopped waiting for them says "retry elsewhere"."""
        if os.getpid() != self._owner:
            return  # a forked child's copy: nothing of it is the child's to put or stop
        self.closed = True
        self._prober.close()
        if self.zip is not None:
            self.zip.close()  # PUT_Q: after it the device touches none of our memory
            self.zip = None
        for lost in self._quarantine:
            lost.let_go()  # the heap goes with the runtime: whatever a device still writes, nobody reads
        self._quarantine.clear()
        self.cpu.close()


async def _outcome(job: Job, start: Callable[[Done], None]) -> Result:
    """Await what ``start`` hands its callback. A caller cancelled before the outcome abandons the job
    (its buffers are freed when the driver lets go of them); one cancelled after releases the result."""
    outcome: asyncio.Future[Result] = asyncio.get_running_loop().create_future()

    def done(value: Result | BaseException) -> None:
        if outcome.done():
            if isinstance(value, Result):
                value.release()
        elif isinstance(value, BaseException):
            outcome.set_exception(value)
        else:
            outcome.set_result(value)

    start(done)
    try:
        return await outcome
    except asyncio.CancelledError:
        if outcome.done() and not outcome.cancelled() and outcome.exception() is None:
            outcome.result().release()
        else:
            job.abandon()
        raise


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _lost_by(job: Job, lost: DeviceLost | None) -> DeviceLost | None:
    """Why a job of a sync batch must run again: its own loss, or the batch's when the queue
    never took it (it has no status)."""
    if isinstance(job.error, DeviceLost):
        return job.error
    return lost if job.status < 0 else None


def _collect(outcomes: list[Result | BaseException]) -> list[Result]:
    """A batch's results; on any error, release the others' buffers and raise the first."""
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            for other in outcomes:
                if isinstance(other, Result):
                    other.release()
            raise outcome
    return [outcome for outcome in outcomes if isinstance(outcome, Result)]


def _describe(status: int) -> str:
    try:
        return f"engine status {abi.Status(status).name.lower()} (0x{status:02x})"
    except ValueError:
        return f"engine status 0x{status:02x}"
