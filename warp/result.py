"""What a job hands back: :class:`Result`, a view of its pooled destination buffer, and the
runtime's figures, :class:`RuntimeStats`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import final

from warp.drv.base import DriverStats, Job
from warp.mem import HeapStats


@final
class Result:
    """The output of one job: ``view`` is the destination buffer, trimmed to what was produced."""

    def __init__(self, job: Job) -> None:
        self._buffer = job.dst
        self.view = job.dst.view[:job.produced]

    def __len__(self) -> int:
        return len(self.view)

    def tobytes(self) -> bytes:
        return bytes(self.view)

    def release(self) -> None:
        self._buffer.release()

    def __enter__(self) -> Result:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@final
@dataclass(frozen=True)
class RuntimeStats:
    driver: str
    fallback_jobs: int
    queue_resets: int
    heap: HeapStats
    drivers: tuple[DriverStats, ...]

    @property
    def device(self) -> DriverStats | None:
        """The device's driver, while the runtime has one (alive or not); None on the cpu alone."""
        return next((d for d in self.drivers if d.device is not None), None)
