"""The harness's wait_until, whose semantics every waiting test relies on: done at the first true
answer, an OSError is "not yet", any other exception ends the wait, and a timeout fails naming
what was awaited with the tail of the log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import wait_until


def test_returns_at_the_first_true_answer() -> None:
    answers = iter([False, 0, "", True, False])
    asked = []

    def predicate() -> object:
        asked.append(1)
        return next(answers)

    wait_until(predicate, 5, "the fourth answer")
    assert len(asked) == 4


def test_an_oserror_is_not_yet() -> None:
    answers: Iterator[OSError | bool] = iter([ConnectionRefusedError(), FileNotFoundError(), True])

    def predicate() -> bool:
        answer = next(answers)
        if isinstance(answer, OSError):
            raise answer
        return answer

    wait_until(predicate, 5, "a port")


def test_any_other_exception_ends_the_wait_at_once() -> None:
    def predicate() -> bool:
        raise AssertionError("the server exited")

    with pytest.raises(AssertionError, match="the server exited"):
        wait_until(predicate, 60, "a dead server")  # fails now, not in a minute


def test_a_timeout_names_what_and_shows_the_log(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("early lines\n" + "x" * 5000 + "\nthe last line\n")
    asked = []
    with pytest.raises(AssertionError, match="waiting for the impossible") as caught:
        wait_until(lambda: asked.append(1), 0.2, "the impossible", log)
    assert "the last line" in str(caught.value) and "early lines" not in str(caught.value)
    assert len(asked) >= 2  # asked until, and once more at, the deadline
