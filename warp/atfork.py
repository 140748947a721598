"""fork and the library: what UADK's ``pthread_atfork`` child handlers do, for warp's objects.

Every UADK algorithm library registers ``pthread_atfork(NULL, NULL, wd_<alg>_clear_status)`` in
its init: in a forked child the library is uninitialised, its ctxs (queues) are the parent's and
are never used, and a child that wants the device calls init again, getting queues of its own.
Under SVA a child's copy-on-write address space is not bound to the device (the device keeps
serving the parent's mm), so sharing the parent's queues from the child would be wrong anyway.

Objects register with :func:`track`; in the child each one's ``reset_in_child`` runs. It returns
whatever the child must keep alive for good: ring mappings fork left out (``MADV_DONTFORK``) are
holes in the child, and an inherited ``mmap`` object that is collected unmaps its range — by then
possibly someone else's mapping.
"""

from __future__ import annotations

import os
import weakref
from typing import Protocol


class Inherited(Protocol):
    """Something of the parent's that a forked child must stop using."""

    def reset_in_child(self) -> object: ...


_TRACKED: weakref.WeakSet[Inherited] = weakref.WeakSet()
_KEPT: list[object] = []


def track(obj: Inherited) -> None:
    """Have ``obj.reset_in_child()`` run in every child forked while ``obj`` lives."""
    _TRACKED.add(obj)


def _reset_all() -> None:
    for obj in list(_TRACKED):
        kept = obj.reset_in_child()
        if kept is not None:
            _KEPT.append(kept)
    _TRACKED.clear()  # the child's own objects register afresh


os.register_at_fork(after_in_child=_reset_all)
