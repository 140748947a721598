"""Helpers for the device-fidelity tests: a queue driven word by word, DFX and sysfs readers,
the control CLI. Not a test module (pytest collects ``test_*.py`` only)."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from warp import Runtime, abi, cdev
from warp.dfx import Dev, Dfx
from warp.ring import CqConsumer, SqProducer
from warp.sva import AddressSpace
from warp.uacce import Device, QueueHandle

NAME = "warp_zip-0"


def paths(root: Path) -> cdev.DevicePaths:
    return cdev.DevicePaths(root, NAME)


def dfx(root: Path) -> Dfx:
    return Dfx(paths(root).dfx, 0, 0, create=False)


def attr(root: Path, name: str) -> str:
    return (paths(root).sysfs / name).read_text().strip()


def loaded_space(size: int, content: bytes) -> AddressSpace:
    """A heap of ``size`` bytes with ``content`` written by the CPU at 0 (its pages present) and 2
    MiB at 2 MiB prefaulted for outputs: the fixture the device-level fidelity tests start from."""
    space = AddressSpace(size)
    space.write(0, content)
    space.prefault(2 << 20, 2 << 20)
    return space


def compress_all(rt: Runtime, bodies: list[bytes]) -> list[bytes]:
    """Compress ``bodies`` concurrently on one event loop (level 3); the frames, buffers released."""
    async def main() -> list[bytes]:
        comp = rt.compressor(3)
        results = await asyncio.gather(*(comp.acompress(b) for b in bodies))
        out = [bytes(r.view) for r in results]
        for r in results:
            r.release()
        return out

    return asyncio.run(main())


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


@dataclass
class Completion:
    slot: int
    status: int
    produced: int
    consumed: int


class RawQueue:
    """A started queue whose SQEs, doorbells and CQ are driven by hand (the UADK hisi_qm_udrv
    role): what the tests need to see ring-level behaviour the warp driver hides."""

    def __init__(self, root: Path, space: AddressSpace, qc_type: abi.QcType = abi.QcType.COMPRESS) -> None:
        self.space = space
        self.handle = QueueHandle(Device.read(paths(root)), space, qc_type)
        self.sqn = self.handle.sqn
        self.sq = SqProducer()
        self.cq = CqConsumer()
        self.words = self.handle.view.sq
        self.armed = False

    def write(self, src: int, length: int, dst: int, capacity: int, level: int = 3,
              alg: int = abi.Alg.ZSTD) -> int:
        """Fill the SQE at the tail with heap offsets ``src``/``dst``; returns its slot."""
        return self.write_words({
            abi.W.INPUT_LEN: length, abi.W.REQ_TYPE: alg, abi.W.LEVEL: abi.level_to_word(level),
            abi.W.DEST_AVAIL: capacity, abi.W.SRC_LO: (self.space.address(src)) & 0xFFFFFFFF,
            abi.W.SRC_HI: self.space.address(src) >> 32, abi.W.DST_LO: self.space.address(dst) & 0xFFFFFFFF,
            abi.W.DST_HI: self.space.address(dst) >> 32})

    def write_words(self, words: dict[int, int]) -> int:
        slot = self.sq.push()
        base = slot * abi.SQ_WORDS
        for i in range(abi.SQ_WORDS):
            self.words[base + i] = 0
        for index, value in words.items():
            self.words[base + int(index)] = value & 0xFFFFFFFF
        self.words[base + abi.W.TAG] = slot
        return slot

    def doorbell(self) -> None:
        self.handle.ring(abi.DoorbellCmd.SQ, self.sq.tail)

    def arm(self, on: bool = True) -> None:
        """CQ doorbell with priority 1 (interrupts on) or 0 (polling mode)."""
        self.armed = on
        self.handle.ring(abi.DoorbellCmd.CQ, self.cq.head, priority=int(on))

    def poll(self, ring_cq: bool = True) -> list[Completion]:
        """Consume every valid CQE; the result is read from the SQE slot it names."""
        out: list[Completion] = []
        while (slot := self.cq.poll(self.handle.view.cq)) is not None:
            base = slot * abi.SQ_WORDS
            out.append(Completion(slot, self.words[base + abi.W.STATUS] & 0xFF, self.words[base + abi.W.PRODUCED],
                                  self.words[base + abi.W.CONSUMED]))
        if out:
            self.sq.retire(len(out))
            if ring_cq:
                self.handle.ring(abi.DoorbellCmd.CQ, self.cq.head, priority=int(self.armed))
        return out

    def wait(self, count: int, timeout: float = 30.0) -> list[Completion]:
        """Poll until ``count`` completions arrived (fewer if the timeout runs out)."""
        got: list[Completion] = []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            batch = self.poll()
            got += batch
            if not batch:
                time.sleep(0.001)
        return got

    def irq_pending(self) -> int:
        try:
            return self.handle.irq_read()
        except BlockingIOError:
            return 0

    def close(self) -> None:
        self.handle.close()


class RawFile:
    """A queue file driven request by request, to reach every state and errno by hand."""

    def __init__(self, root: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.connect(str(paths(root).chardev))

    def call(self, message: cdev.Message, fds: list[int] | None = None) -> cdev.Message:
        cdev.send(self.sock, message, fds)
        received = cdev.receive(self.sock)
        assert received is not None
        reply, out = received
        for fd in out:
            os.close(fd)
        cdev.raise_for_reply(reply)
        return reply

    def open(self, space: AddressSpace) -> int:
        return int(self.call({"cmd": "open", "base": space.base, "size": space.size},
                             [space.heap_fd, space.pt_fd])["pasid"])

    def mmap(self, region: int, size: int | None = None) -> None:
        """Map ``region`` (its whole size unless ``size``); the fds that come back are closed."""
        if size is None:
            size = abi.REGION_SIZE[abi.Region(region)] if region in set(abi.Region) else abi.PAGE_SIZE
        self.call({"cmd": "mmap", "region": region, "size": size})

    def ioctl(self, op: str, **kw: int) -> cdev.Message:
        return self.call({"cmd": "ioctl", "op": op, **kw})

    def hung_up(self) -> bool:
        """Whether the device closed the connection (end of file, no reply pending)."""
        self.sock.settimeout(5)
        return cdev.receive(self.sock) is None

    def close(self) -> None:
        self.sock.close()


def errno_name(exc: BaseException) -> str:
    assert isinstance(exc, OSError)
    return errno.errorcode.get(exc.errno or 0, "?")


@contextmanager
def queue_and_counters(root: Path, space: AddressSpace) -> Iterator[tuple[RawQueue, Dfx]]:
    """A started queue driven by hand and the device's DFX counters, both closed at the end."""
    q = RawQueue(root, space)
    counters = dfx(root)
    try:
        yield q, counters
    finally:
        counters.close()
        q.close()


def resets_reach(counters: Dfx, n: int) -> Callable[[], bool]:
    return lambda: int(counters.dev[Dev.RESETS]) == n


def run_one(q: RawQueue, timeout: float = 10) -> int:
    """One small job on ``q``: its status."""
    q.write(0, 4000, 1 << 20, 8192, level=1)
    q.doorbell()
    (done,) = q.wait(1, timeout)
    return done.status


def run_fresh(root: Path, space: AddressSpace) -> int:
    """One job on a queue of its own, as a user who re-created its queue after a reset (each
    hardware error resets the controller, which stops every queue for good)."""
    q = RawQueue(root, space)
    try:
        return run_one(q)
    finally:
        q.close()
