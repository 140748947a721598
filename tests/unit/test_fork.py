"""fork, without a device: what a child is left with of an SVA heap (warp.sva) and of
the objects warp.atfork resets (UADK's atfork child handlers)."""

from __future__ import annotations

import os
import signal
import time
import traceback
from collections.abc import Callable

from warp import atfork
from warp import sva as space_module
from warp.sva import AddressSpace

PAGE = 4096


def in_child(check: Callable[[], bool], timeout: float = 30.0) -> int:
    """Fork, run ``check`` in the child and return its exit code: 0 if it held, 1 if not, 2 if it raised."""
    pid = os.fork()
    if pid == 0:
        code = 2
        try:
            code = 0 if check() else 1
        except BaseException:  # noqa: B036 -- the child must reach _exit whatever happens
            traceback.print_exc()
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError("the child did not exit")


def test_a_child_finds_the_heap_wiped_and_its_memfds_closed() -> None:
    space = AddressSpace(16 * PAGE)
    try:
        space.write(0, b"the parent's data" * 500)

        def child() -> bool:
            wiped = not any(space.view) and not any(space.page_table)
            space.write(0, b"the child's own")  # its own private memory now
            return wiped and space.heap_fd == space.pt_fd == -1 and bytes(space.view[:15]) == b"the child's own"

        assert in_child(child) == 0
        assert bytes(space.view[:17]) == b"the parent's data", "the child's write reached the parent"
        assert space.heap_fd >= 0 and any(space.page_table)
    finally:
        space.close()


def test_a_range_taken_before_the_refill_is_kept_never_unmapped() -> None:
    """If something lives in the range when the refill comes (here: the first refill itself),
    the inherited mapping is pinned, so collecting it can never unmap what lives there."""
    space = AddressSpace(4 * PAGE)
    try:
        def child() -> bool:
            space_module._wipe_in_child()  # the range is taken: MAP_FIXED_NOREPLACE fails
            return any(pinned is space._heap for pinned in space_module._PINNED)

        assert in_child(child) == 0
        assert not space_module._PINNED
    finally:
        space.close()


class Tracked:
    def __init__(self) -> None:
        self.reset = False
        self.keep = object()

    def reset_in_child(self) -> object:
        self.reset = True
        return self.keep


def test_tracked_objects_are_reset_in_the_child_only() -> None:
    obj = Tracked()
    atfork.track(obj)

    def child() -> bool:
        kept = any(k is obj.keep for k in atfork._KEPT)
        return obj.reset and kept and obj not in atfork._TRACKED  # the child's own objects register afresh

    assert in_child(child) == 0
    assert not obj.reset and obj in atfork._TRACKED
