"""How a request on ``/compress`` or ``/decompress`` fails, as the problem its client gets: a job
that ended without a result, an overloaded worker, a client too slow with its head or its body.
Shared by the aiohttp handlers (:mod:`app.api.compress`), the streams (:mod:`app.api.streams`)
and the data path (:mod:`app.datapath`), so each failure reads the same whichever served it.
"""

from __future__ import annotations

from typing import Final

from app.api import body
from app.api.errors import Problem
from warp import (
    ContextTooLarge,
    HeapExhausted,
    JobFailed,
    JobTimeout,
    MixedDictionaries,
    RuntimeClosed,
    UnknownDictionary,
    abi,
)

#: How a job can end other than with a result, each answered by :func:`job_problem`.
JOB_ERRORS: Final = (JobFailed, JobTimeout, RuntimeClosed, HeapExhausted)


def job_problem(exc: BaseException) -> Problem:
    """The answer to a job that ended with ``exc`` (one of :data:`JOB_ERRORS`)."""
    if isinstance(exc, UnknownDictionary):
        return Problem(400, "unknown-frame-dictionary", f"{exc}; GET /dictionaries lists the ones this service has")
    if isinstance(exc, ContextTooLarge):
        return Problem(400, "stream-context-too-large", f"{exc} (--stream-memory), or send a body under "
                       "--stream-above, which is compressed whole")
    if isinstance(exc, MixedDictionaries):
        return Problem(400, "mixed-frame-dictionaries", f"{exc}; send each dictionary's frames as a request of its "
                       "own")
    if isinstance(exc, JobFailed):
        if exc.status == abi.Status.CORRUPT_INPUT:
            return Problem(400, "corrupt-frame", "the body is not a valid zstd frame")
        if exc.status == abi.Status.NO_CTX_MEMORY:
            return Problem(503, "stream-memory-full", "the accelerator holds as many stream contexts as its memory "
                           "allows (--stream-memory); retry shortly, or stream at a lower level", body.RETRY_AFTER)
        if exc.status == abi.Status.DST_TOO_SMALL:
            return Problem(413, "output-too-large", "the decompressed output would exceed the body limit")
        return Problem(500, "engine-error", f"the accelerator failed the job: {exc}")
    if isinstance(exc, JobTimeout):
        return Problem(503, "timeout", "the accelerator did not finish in time; retry shortly", body.RETRY_AFTER)
    if isinstance(exc, RuntimeClosed):  # stopping, and --shutdown-timeout ran out before this job finished
        return Problem(503, "shutting-down", "the server is shutting down; retry", body.RETRY_AFTER)
    if isinstance(exc, HeapExhausted):
        return body.out_of_memory()
    raise TypeError(f"not a job error: {exc!r}")


def overloaded(limit: int) -> Problem:
    return Problem(503, "overloaded", f"more than {limit} requests in progress; retry shortly", body.RETRY_AFTER)


def body_timeout(timeout: float) -> Problem:
    return Problem(408, "body-timeout", f"the body did not arrive within {timeout:g} s")


def header_timeout(timeout: float) -> Problem:
    return Problem(408, "header-timeout", f"the request head did not arrive within {timeout:g} s")
