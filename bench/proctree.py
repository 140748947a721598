"""A server's process tree from /proc: CPU time and memory while it runs, and a clean kill after.

Servers fork (SO_REUSEPORT workers, warpzip's device process), so the measurement and the cleanup
must cover every descendant, not only the PID the driver started. A process is identified by
(pid, start time) so that a recycled PID is never mistaken for, or killed as, one of ours.

warpzip's device process is accounted apart: on this machine it burns the CPU that an accelerator
would take off the host, so the host's share is the tree's CPU *without* it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

PROC = Path("/proc")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

DEVICE_MODULE = "warp.device"
"""``warp/device/launch.py`` starts the device as ``python -m warp.device ...``."""

ProcessKey = tuple[int, int]
"""(pid, start time in clock ticks since boot): unique for the life of the machine."""


@dataclass(frozen=True)
class ProcStat:
    """The fields of ``/proc/PID/stat`` the benchmark uses."""

    pid: int
    ppid: int
    state: str
    cpu_ticks: int
    """utime + stime of the process itself (children that exit are not followed)."""
    start_ticks: int
    rss_bytes: int

    @property
    def key(self) -> ProcessKey:
        return (self.pid, self.start_ticks)


def parse_stat(stat: str) -> ProcStat:
    """Parses ``/proc/PID/stat``, whose command name may hold spaces and parentheses."""
    pid_text, rest = stat.split(" (", 1)
    fields = rest[rest.rindex(")") + 2 :].split()
    # fields[0] is field 3 of proc(5), state; then ppid 4, utime 14, stime 15, starttime 22, rss 24.
    return ProcStat(
        pid=int(pid_text),
        ppid=int(fields[1]),
        state=fields[0],
        cpu_ticks=int(fields[11]) + int(fields[12]),
        start_ticks=int(fields[19]),
        rss_bytes=int(fields[21]) * PAGE_SIZE,
    )


def descendants_and_self(parents: Mapping[int, int], root: int) -> set[int]:
    """PIDs in the tree under ``root`` (inclusive), given each live PID's parent."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    tree: set[int] = set()
    stack = [root] if root in parents else []
    while stack:
        pid = stack.pop()
        tree.add(pid)
        stack.extend(child for child in children.get(pid, ()) if child not in tree)
    return tree


def _read_stat(pid: int) -> ProcStat | None:
    try:
        return parse_stat((PROC / str(pid) / "stat").read_text())
    except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
        return None  # exited between listing /proc and reading it


def snapshot_tree(root: int) -> list[ProcStat]:
    """Every live, non-zombie process in the tree under ``root`` right now."""
    stats = [stat for stat in map(_read_stat, _all_pids()) if stat is not None]
    tree = descendants_and_self({stat.pid: stat.ppid for stat in stats}, root)
    return [stat for stat in stats if stat.pid in tree and stat.state != "Z"]


def runs_device(argv: Sequence[str]) -> bool:
    """Whether a command line is warpzip's device process (``-m warp.device``, wherever it sits,
    so an interpreter flag before ``-m`` does not hide it)."""
    return any(flag == "-m" and module == DEVICE_MODULE for flag, module in pairwise(argv))


def is_device(pid: int) -> bool:
    """Whether ``pid`` runs the device now; ``False`` once it has exited."""
    try:
        argv = (PROC / str(pid) / "cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError):
        return False
    return runs_device([arg.decode(errors="replace") for arg in argv])


def device_subtree(tree: Sequence[ProcStat]) -> set[int]:
    """PIDs of the tree's device processes and anything they fork: all of it is device work."""
    parents = {stat.pid: stat.ppid for stat in tree}
    device: set[int] = set()
    for stat in tree:
        if stat.pid not in device and is_device(stat.pid):
            device |= descendants_and_self(parents, stat.pid)
    return device


def _all_pids() -> Iterable[int]:
    return (int(entry.name) for entry in PROC.iterdir() if entry.name.isdigit())


@dataclass(frozen=True)
class Usage:
    """What a server's tree used during one measured interval."""

    cpu_seconds: float
    """The whole tree, device included."""
    device_cpu_seconds: float | None
    """The device processes' share of ``cpu_seconds``; ``None`` if the tree ran no device."""
    peak_rss_bytes: int
    """Highest sum of the tree's RSS over the samples (shared pages count once per process)."""


class TreeSampler:
    """Samples a process tree in a background thread while the load generator runs.

    CPU is the growth of each process's own utime+stime from the first sample (or from zero for a
    process born during the interval) to its last sample, so forked workers count in full. Each
    process is classed as device or not at every sample, the last one winning: a child forked by
    the supervisor shows the supervisor's command line until it execs the device.
    """

    def __init__(self, root: int, interval_s: float = 0.2) -> None:
        self._root = root
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._first: dict[ProcessKey, int] = {}
        self._last: dict[ProcessKey, int] = {}
        self._peak_rss = 0
        self._seen: set[ProcessKey] = set()
        self._device: set[ProcessKey] = set()
        self._thread = threading.Thread(target=self._loop, name="tree-sampler", daemon=True)

    def __enter__(self) -> TreeSampler:
        self._sample(initial=True)
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample(initial=False)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._sample(initial=False)

    def _sample(self, initial: bool) -> None:
        tree = snapshot_tree(self._root)
        device = device_subtree(tree)
        for stat in tree:
            if stat.key not in self._first:
                self._first[stat.key] = stat.cpu_ticks if initial else 0
            self._last[stat.key] = stat.cpu_ticks
            self._seen.add(stat.key)
            if stat.pid in device:
                self._device.add(stat.key)
            else:
                self._device.discard(stat.key)
        self._peak_rss = max(self._peak_rss, sum(stat.rss_bytes for stat in tree))

    @property
    def seen(self) -> set[ProcessKey]:
        """Every process of the tree observed so far, for :func:`kill_tree`."""
        return set(self._seen)

    def usage(self) -> Usage:
        ticks = {key: self._last[key] - self._first[key] for key in self._last}
        device = sum(ticks[key] for key in self._device) / CLOCK_TICKS if self._device else None
        return Usage(cpu_seconds=sum(ticks.values()) / CLOCK_TICKS, device_cpu_seconds=device,
                     peak_rss_bytes=self._peak_rss)


def _alive(keys: Iterable[ProcessKey]) -> list[ProcessKey]:
    alive = []
    for pid, start in keys:
        stat = _read_stat(pid)
        if stat is not None and stat.start_ticks == start and stat.state != "Z":
            alive.append((pid, start))
    return alive


def kill_tree(keys: Iterable[ProcessKey]) -> list[ProcessKey]:
    """SIGKILLs the given processes that still exist (same PID *and* start time) and waits up to
    two seconds for them to go; returns those that did not (zombies count as gone)."""
    remaining = _alive(keys)
    for pid, _ in remaining:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 2.0
    while remaining and time.monotonic() < deadline:
        time.sleep(0.02)
        remaining = _alive(remaining)
    return remaining
