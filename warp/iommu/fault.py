"""I/O page faults, SMMU stall model: a DMA access to a non-present page posts a page request to
the page request queue and stalls; the fault handler (the "kernel", a thread of its own in the
device process) resolves it against the process's mapping and answers SUCCESS (retry) or INVALID
(abort the job).

A request is a group (``struct iopf_group``): the pages one grpid covers, the last flagged
``LAST_PAGE``. A stalled SMMU transaction is a group of one page (``arm_smmu_handle_evt`` sets
LAST_PAGE on every event, grpid = STAG), which is what the engines post: one request per page, at
the page where the access stopped. A PCIe PRI device may put several pages in one group; as in
io-pgfault's ``iopf_handler`` the group's pages are handled in order and the first failure ends
it — the pages after it are not handled, and the whole group is answered with that failure.

The handler is a separate thread on purpose: the measured cost of a fault is then a real queue
round trip plus the work of making the page present, not a function call.
"""

from __future__ import annotations

import enum
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Final, Protocol, final

import numpy as np
import numpy.typing as npt


class Perm(enum.IntFlag):
    """IOMMU_FAULT_PERM_*."""

    READ = 1 << 0
    WRITE = 1 << 1


class Flag(enum.IntFlag):
    """IOMMU_FAULT_PAGE_REQUEST_*."""

    PASID_VALID = 1 << 0
    LAST_PAGE = 1 << 1


class Response(enum.IntEnum):
    """enum iommu_page_response_code."""

    SUCCESS = 0
    INVALID = 1
    FAILURE = 2


class FaultCounter(enum.IntEnum):
    """Columns of the device-wide IOPF counter row (in DFX shared memory)."""

    REQUESTS = 0  # page request groups posted
    PAGES_OK = 1  # pages made present
    PAGES_INVALID = 2  # pages answered INVALID (unmapped or permission); a group has at most one
    SERVICE_NS = 3  # total time from post to response
    HIST0 = 4  # service-time histogram buckets follow


#: Upper bounds (seconds) of the service-time histogram buckets; the last bucket is +Inf.
SERVICE_BUCKETS: Final = (10e-6, 50e-6, 100e-6, 500e-6, 1e-3, 5e-3, 10e-3, 50e-3)
COUNTER_COLUMNS: Final = FaultCounter.HIST0 + len(SERVICE_BUCKETS) + 1


class Resolver(Protocol):
    """What the handler needs from the IOMMU: find the mapping behind a PASID and fix one page."""

    def handle_mm_fault(self, pasid: int, addr: int, perm: Perm) -> Response: ...


@final
@dataclass(frozen=True)
class PageRequest:
    """``struct iommu_fault_page_request``: one page of a group."""

    flags: Flag
    pasid: int
    grpid: int
    perm: Perm
    addr: int


@final
@dataclass
class Group:
    """``struct iopf_group``: the page requests of one grpid, answered together."""

    faults: list[PageRequest]
    posted_ns: int = field(default_factory=time.monotonic_ns)
    response: Response = Response.FAILURE
    done: threading.Event = field(default_factory=threading.Event)


@final
class FaultHandler:
    """The page request queue and the thread that drains it."""

    def __init__(self, resolver: Resolver, counters: npt.NDArray[np.uint64]) -> None:
        self._resolver = resolver
        self._counters = counters
        self._queue: queue.SimpleQueue[Group | None] = queue.SimpleQueue()
        self._grpid = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="iopf-handler", daemon=True)
        self._thread.start()

    def fault(self, pasid: int, addrs: list[int], perm: Perm, timeout: float = 10.0) -> Response:
        """Post one group of page requests for ``addrs`` (in access order) and stall the caller
        (an engine) until the group is answered; FAILURE if no answer comes within ``timeout``."""
        with self._lock:
            self._grpid = (self._grpid + 1) & 0x1FF
            grpid = self._grpid
        last = len(addrs) - 1
        group = Group([PageRequest(flags=Flag.PASID_VALID | (Flag.LAST_PAGE if i == last else Flag(0)), pasid=pasid,
                                   grpid=grpid, perm=perm, addr=addr) for i, addr in enumerate(addrs)])
        self._queue.put(group)
        if not group.done.wait(timeout):
            return Response.FAILURE
        return group.response

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while (group := self._queue.get()) is not None:
            self._service(group)

    def _service(self, group: Group) -> None:
        """``iopf_handler``: each page in turn until one fails; errors are sticky."""
        c = self._counters
        result = Response.SUCCESS
        for fault in group.faults:
            result = self._resolver.handle_mm_fault(fault.pasid, fault.addr, fault.perm)
            if result is not Response.SUCCESS:
                c[FaultCounter.PAGES_INVALID] += 1
                break
            c[FaultCounter.PAGES_OK] += 1
        group.response = result
        elapsed = time.monotonic_ns() - group.posted_ns
        c[FaultCounter.REQUESTS] += 1
        c[FaultCounter.SERVICE_NS] += elapsed
        c[FaultCounter.HIST0 + _bucket(elapsed / 1e9)] += 1
        group.done.set()


def _bucket(seconds: float) -> int:
    for i, bound in enumerate(SERVICE_BUCKETS):
        if seconds <= bound:
            return i
    return len(SERVICE_BUCKETS)

