"""The simulated uacce accelerator: one process, a device-agnostic uacce core (``core``) and the
zstd device behind its ops table (``zip``)."""

from typing import Final

ENGINES: Final = 2
"""Engines of a device started without ``--engines``, by ``warpzip device``, ``warpzip serve`` (its
embedded device) and ``warpzip bench device`` alike: the measured default (BENCHMARKS.md)."""
QUEUE_PAIRS: Final = 64
"""Hardware queue pairs of a device (``--queue-pairs``): all its processes' queues together."""
