"""Sizes and units as the benchmarks parse and print them.

MB is 10^6 bytes (as ``zstd -b`` and the DESIGN figures); block and body sizes are binary
(``4k`` = 4096, as ``uadk_tool --pktlen``) and printed the way the reports name them.
"""

from __future__ import annotations

import re
from typing import Final

MB: Final = 1_000_000
NS: Final = 1_000_000_000

_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]?)(?:i?b)?\s*$", re.IGNORECASE)
_UNITS: Final = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_size(text: str) -> int:
    """``4k``, ``64KiB``, ``1m``, ``65536`` → bytes (binary units, as ``uadk_tool --pktlen`` sizes)."""
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"not a size: {text!r} (try 4k, 64k, 1m or a byte count)")
    size = int(match.group(1)) * _UNITS[match.group(2).lower()]
    if size < 1:
        raise ValueError("a block must hold at least one byte")
    return size


def human_size(size: int) -> str:
    """``256 B``, ``64 KiB``, ``1 MiB``, ``3 GiB``: the way sizes are named in the reports."""
    for shift, name in ((30, "GiB"), (20, "MiB"), (10, "KiB")):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift} {name}"
    return f"{size} B"
