"""What a failed stream answers before its head (or logs after it), for the failures the HTTP tests
cannot time reliably: the heap running out between two BDs, an unexpected error."""

from __future__ import annotations

import logging

import pytest

from app.api.errors import Problem
from app.api.streams import problem_of
from warp import DeviceLost, HeapExhausted, JobFailed, abi


@pytest.mark.parametrize(("exc", "status", "kind"), [
    (HeapExhausted("no free 2097152-byte block"), 503, "overloaded"),
    (JobFailed(abi.Status.CORRUPT_INPUT, "bad"), 400, "corrupt-frame"),
    (JobFailed(abi.Status.DST_TOO_SMALL, "big"), 413, "output-too-large"),
    (JobFailed(abi.Status.NO_CTX_MEMORY, "full"), 503, "stream-memory-full"),
    (DeviceLost("gone"), 500, "engine-error"),
    (Problem(413, "body-too-large", "over"), 413, "body-too-large"),
])
def test_each_failure_is_its_problem(exc: Exception, status: int, kind: str) -> None:
    problem = problem_of(exc)
    assert (problem.status, problem.slug) == (status, kind)
    if status == 503:
        assert problem.headers.get("Retry-After") == "1"


def test_an_unexpected_error_is_a_500_that_says_nothing_and_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="warpzip"):
        problem = problem_of(RuntimeError("secret internals"))
    assert (problem.status, problem.slug) == (500, "internal")
    assert "secret" not in problem.detail
    assert any(record.exc_info and "secret internals" in str(record.exc_info[1]) for record in caplog.records)
