"""The simulated uacce accelerator: one process, a device-agnostic uacce core (``core``) and the
zstd device behind its ops table (``zip``)."""

from typing import Final

ENGINES: Final = 2
"""Engines per pool (compression and decompression each) of a device started without
``--engines``, by ``warpzip device`` and ``warpzip serve`` (its embedded device) alike; a pool's own
``--comp-engines`` / ``--decomp-engines`` wins over it.

Two per pool, not the hardware's 2 + 6: each direction alone keeps the parallelism of the two
shared engines this model had before it had pools (BENCHMARKS.md: 2 engines beat 1 at 64 KiB and
1 MiB), and on the 2-core machines it runs on more busy engines per direction than cores only add
contention (zstd releases the GIL, so two engines already fill both cores). A mixed load can now
run four jobs at once, which on two cores costs some switching, and buys that neither direction
waits behind the other; idle engines sleep in ``epoll_wait`` and cost nothing."""
QUEUE_PAIRS: Final = 64
"""Hardware queue pairs of a device (``--queue-pairs``): all its processes' queues together."""
