"""Exceptions of the warp library."""

from __future__ import annotations

from typing import Protocol

from warp import abi


class WarpError(Exception):
    """Base class of everything warp raises on purpose."""


class NoDevice(WarpError):
    """No usable accelerator under the runtime root (absent, isolated, or no queue available)."""


class Releasable(Protocol):
    def release(self) -> None: ...


class DeviceLost(WarpError):
    """The device went away (process died, queue stopped) while jobs were in flight.

    ``may_write`` says whether the device could still write into the jobs' destination buffers:
    false when its process is gone, true when it is alive but stopped the queue (isolation), in
    which case a re-run must not reuse those buffers until the queue has been put.
    """

    def __init__(self, message: str, may_write: bool = False) -> None:
        super().__init__(message)
        self.may_write = may_write
        #: Destinations of the lost jobs kept out of the pool while the device may write them.
        self.held: list[Releasable] = []

    def hold(self, buffer: Releasable) -> None:
        self.held.append(buffer)

    def let_go(self) -> None:
        """The device let go of the queue (answered its PUT_Q, or is gone): what it might have
        written can go back to the pool, and later re-runs need no fresh destination."""
        self.may_write = False
        held, self.held = self.held, []
        for buffer in held:
            buffer.release()


class RuntimeClosed(WarpError):
    """The runtime was closed (the service is stopping) before the job could finish anywhere."""


class HeapExhausted(WarpError):
    """The SVA heap has no block of the requested size: back off and retry."""


class Busy(WarpError):
    """The queue cannot take the request now (UADK's ``-WD_EBUSY``): every slot is in flight."""


class JobFailed(WarpError):
    """The engine completed the job with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class UnknownDictionary(JobFailed):
    """A frame to decompress names a zstd dictionary the caller's resolver does not know; raised
    before the job is submitted, so the device never runs a frame it cannot decode."""

    def __init__(self, dict_id: int) -> None:
        super().__init__(abi.Status.CORRUPT_INPUT, f"the frame needs zstd dictionary {dict_id}, which is unknown")
        self.dict_id = dict_id


class MixedDictionaries(JobFailed):
    """The frames of one body to decompress name different zstd dictionaries. A job carries one
    dictionary (as ``zstd -D`` takes one), so the body is refused before it is submitted; a
    decompression stream, which starts each frame afresh, takes such a body."""

    def __init__(self, dict_ids: tuple[int, ...]) -> None:
        named = ", ".join(map(str, dict_ids))
        super().__init__(abi.Status.CORRUPT_INPUT, f"the frames name more than one zstd dictionary ({named}); "
                         "one body is decoded with one")
        self.dict_ids = dict_ids


class ContextTooLarge(JobFailed):
    """A stream whose zstd context alone, by zstd's estimate, is more than the runtime's
    ``stream_memory``: it could never run, so it fails before its first BD instead of being
    refused ``NO_CTX_MEMORY`` as often as it is retried (a level-22 stream needs ~830 MiB)."""

    def __init__(self, need: int, limit: int, advice: str) -> None:
        super().__init__(abi.Status.NO_CTX_MEMORY, f"the stream's zstd context needs ~{need >> 20} MiB, more than "
                         f"the {limit >> 20} MiB of stream memory; {advice}")
        self.need = need
        self.limit = limit


class JobTimeout(WarpError):
    """The job did not complete within its timeout."""
