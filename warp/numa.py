"""NUMA placement as libnuma reports it to UADK: the node the calling thread runs on and the
distance between two nodes, read from ``/sys/devices/system/node`` (``numa_node_of_cpu``,
``numa_distance``). Discovery (:func:`warp.uacce.devices`) ranks devices with them as
``wd_get_accel_dev`` does."""

from __future__ import annotations

from pathlib import Path
from typing import Final

NODE_SYSFS: Final = Path("/sys/devices/system/node")
#: What ``numa_distance`` reports without a distance table (LOCAL_DISTANCE / REMOTE_DISTANCE).
LOCAL_DISTANCE: Final = 10
REMOTE_DISTANCE: Final = 20


def distance(a: int, b: int, nodes: Path = NODE_SYSFS) -> int:
    """``numa_distance(a, b)``: entry ``b`` of ``node<a>/distance`` (the firmware's SLIT row);
    local or remote distance when the machine publishes no table (no NUMA)."""
    try:
        return int((nodes / f"node{a}" / "distance").read_text().split()[b])
    except (OSError, ValueError, IndexError):
        return LOCAL_DISTANCE if a == b else REMOTE_DISTANCE


def current_node(nodes: Path = NODE_SYSFS) -> int:
    """``numa_node_of_cpu(sched_getcpu())``: the node whose ``cpulist`` holds the cpu this thread
    last ran on (field 39 of ``/proc/thread-self/stat``; Python has no ``sched_getcpu``); 0 when
    either is unknown, as on a machine without NUMA."""
    try:
        stat = Path("/proc/thread-self/stat").read_text()
        cpu = int(stat.rsplit(")", 1)[1].split()[36])
        for node in nodes.glob("node[0-9]*"):
            if cpu in parse_cpulist((node / "cpulist").read_text()):
                return int(node.name[4:])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def parse_cpulist(text: str) -> set[int]:
    """A sysfs cpu list (``0-3,8,10-11``) as a set of cpu numbers."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if part:
            first, _, last = part.partition("-")
            cpus.update(range(int(first), int(last or first) + 1))
    return cpus
