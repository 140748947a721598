"""fork (reference §4.3, §7 item 18): a child forked from a process that uses the device shares
none of it. Not the heap's pages (``MADV_DONTFORK``, refilled with zeros as ``MADV_WIPEONFORK``
would: warp.sva), so neither the parent's data nor the device's later writes reach the
child; not the queues (the runtime resets itself in the child, as UADK's atfork handlers reset
its libraries: warp.atfork). A Runtime the child opens itself — what each HTTP worker does — works,
on a PASID and queues of its own."""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import time
import traceback
from pathlib import Path
from typing import Any, NoReturn

import zstandard

from tests.harness import DeviceProc
from tests.integration.fidelity import dfx
from warp import Runtime, abi
from warp.dfx import Queue
from warp.drv.base import Job
from warp.errors import RuntimeClosed
from warp.mem import Buffer
from warp.sva import AddressSpace
from warp.uacce import QueueHandle, devices

MIB = 1 << 20
SECRET = b"the parent's page " * 228  # 4104 bytes: two pages
CHILD_TIMEOUT = 60.0


def test_a_forked_child_shares_no_heap_page_and_no_queue_with_its_parent(device: DeviceProc) -> None:
    rt = Runtime(device.root, driver="zip", heap_size=16 * MIB)
    counters = dfx(device.root)
    pid = 0
    go_r, go_w = os.pipe()
    report_r, report_w = os.pipe()
    try:
        assert rt.zip is not None
        secret, src, dst = rt.load(SECRET), rt.load(SECRET * 8), rt.alloc(64 << 10)
        queues = rt.zip.all_queues()
        pasid, sqns = queues[0].handle.pasid, [q.handle.sqn for q in queues]

        def submitted() -> int:
            return sum(int(counters.queue(sqn)[Queue.SUBMITTED]) for sqn in sqns)

        before = submitted()
        pid = os.fork()
        if pid == 0:
            _child(rt, device.root, secret, dst, [q.handle.sock.fileno() for q in queues], go_r, report_w)
        first = _report(report_r)
        assert first["parent_data_visible"] is False, "the child read the parent's heap page"
        assert first["closed_files"] is True, "the child kept the parent's queue files open"
        assert "belongs to process" in first["job"], f"a job in the child: {first['job']}"
        assert bytes(secret.view[:len(SECRET)]) == SECRET, "the child's write reached the parent's heap"
        assert submitted() == before, "a job submitted in the child landed on the parent's queue"
        own = first["own"]
        assert own["roundtrip"] and own["pasid"] != pasid, own
        assert not set(own["sqns"]) & set(sqns), own

        job = Job(direction=abi.QcType.COMPRESS, src=src, length=len(SECRET) * 8, dst=dst, level=1)
        with rt.execute_sync(job) as frame:  # the device writes the parent's dst page ...
            assert zstandard.ZstdDecompressor().decompress(bytes(frame.view)) == SECRET * 8
            assert submitted() == before + 1  # the counter the child's attempt left alone is live
            os.write(go_w, b"g")
            second = _report(report_r)
        assert second["device_write_visible"] is False, "the device's write reached the child's heap"  # ... not hers
    finally:
        counters.close()
        rt.close()
        for fd in (go_r, go_w, report_r, report_w):
            os.close(fd)
        if pid:
            _reap(pid)


def _child(rt: Runtime, root: Path, secret: Buffer, dst: Buffer, parent_fds: list[int], go: int,
           report: int) -> NoReturn:
    """The forked child: reads what it inherited, tries the parent's runtime, opens its own."""
    code = 1
    try:
        out: dict[str, object] = {"parent_data_visible": any(secret.view[:len(SECRET)])}
        out["closed_files"] = all(_closed(fd) for fd in parent_fds)
        try:
            rt.compress(b"the child's job " * 64)
            out["job"] = "ran"
        except RuntimeClosed as exc:
            out["job"] = str(exc)
        secret.write(0, b"the child's marker")
        with Runtime(root, driver="zip", heap_size=16 * MIB) as own:
            assert own.zip is not None
            data = b"the child's own data " * 500
            out["own"] = {"pasid": own.zip.all_queues()[0].handle.pasid,
                          "sqns": [q.handle.sqn for q in own.zip.all_queues()],
                          "roundtrip": zstandard.ZstdDecompressor().decompress(own.compress(data)) == data}
        os.write(report, json.dumps(out).encode() + b"\n")
        os.read(go, 1)  # the parent's job has written its dst
        os.write(report, json.dumps({"device_write_visible": any(dst.view[:4096])}).encode() + b"\n")
        code = 0
    except BaseException:  # noqa: B036 -- the child must reach _exit whatever happens
        traceback.print_exc()
    finally:
        os._exit(code)


def _closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError as exc:
        return exc.errno == errno.EBADF
    return False


def _report(fd: int) -> dict[str, Any]:
    """One JSON line from the child, or fail if none comes within CHILD_TIMEOUT."""
    line = b""
    deadline = time.monotonic() + CHILD_TIMEOUT
    while not line.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
        assert ready, f"no report from the child within {CHILD_TIMEOUT} s (got {line!r})"
        chunk = os.read(fd, 4096)
        assert chunk, f"the child died before reporting (got {line!r})"
        line += chunk
    result: dict[str, Any] = json.loads(line)
    return result


def _reap(pid: int) -> None:
    deadline = time.monotonic() + CHILD_TIMEOUT
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0, "the child failed (its traceback is on stderr)"
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError("the child did not exit")


def test_a_bare_queue_handle_leaves_a_child_zeros_not_a_hole(device: DeviceProc) -> None:
    """A QueueHandle used without a Runtime: its rings are not inherited either, and the child finds
    zero-filled memory where they were (the device's view of the rings stays the parent's). Left as
    a hole, the child's read of the ring would be a SIGSEGV, and its next mapping could land there."""
    space = AddressSpace(MIB)
    (found,) = devices(device.root, "zstd")
    handle = QueueHandle(found, space, abi.QcType.COMPRESS)
    pid = 0
    try:
        handle.dus[:4] = b"\x01\x02\x03\x04"  # a word of the parent's SQ
        pid = os.fork()
        if pid == 0:
            os._exit(0 if bytes(handle.dus[:4]) == b"\0\0\0\0" else 1)  # a hole would kill it here
        _, status = os.waitpid(pid, 0)
        pid = 0
        assert os.waitstatus_to_exitcode(status) == 0, f"child status {status}: the ring was inherited or a hole"
        assert bytes(handle.dus[:4]) == b"\x01\x02\x03\x04"
    finally:
        if pid:
            _reap(pid)
        handle.put()
        handle.close()
        space.close()
