"""The sans-I/O pieces of ``warp.device.faults``: the isolation policy (``ErrorLog``, on an
injected clock, so the one-hour window needs no hour) and the parsing of an ``inject`` request."""

from __future__ import annotations

import errno

import pytest

from warp import abi, cdev
from warp.device.faults import MAX_SLOW_FACTOR, ErrorLog, Injection


def test_error_log_isolates_on_more_than_threshold_errors_per_hour() -> None:
    """qm_hw_err_isolate: errors older than an hour drop out; the error that finds at least
    ``threshold`` others in the window isolates; threshold 0 never does; a write clears the list."""
    now = 1000.0
    log = ErrorLog(lambda: now)
    assert not any(log.record() for _ in range(100)), "isolate_strategy 0 never isolates"
    log.set_threshold(2)
    assert log.in_window() == 0, "a valid write starts a fresh list"
    assert [log.record(), log.record(), log.record()] == [False, False, True]
    log.set_threshold(2)
    log.record()
    now += 1800
    log.record()
    now += 1801  # the first error is now more than an hour old
    assert log.in_window() == 1
    assert not log.record()
    assert log.record()
    for bad in (-1, abi.ISOLATE_STRATEGY_MAX + 1):
        with pytest.raises(ValueError):
            log.set_threshold(bad)
    log.set_threshold(abi.ISOLATE_STRATEGY_MAX)


@pytest.mark.parametrize(("message", "parsed"), [
    ({"fault": "hang"}, Injection("hang")),
    ({"fault": "hang", "seconds": None}, Injection("hang")),
    ({"fault": "hang", "seconds": 2.5}, Injection("hang", seconds=2.5)),
    ({"fault": "hang", "seconds": 0}, Injection("hang", seconds=0.0)),
    ({"fault": "hw-error"}, Injection("hw-error", count=1)),
    ({"fault": "hw-error", "count": 5}, Injection("hw-error", count=5)),
    ({"fault": "slow", "factor": 1}, Injection("slow", factor=1.0)),
    ({"fault": "slow", "factor": MAX_SLOW_FACTOR}, Injection("slow", factor=MAX_SLOW_FACTOR)),
    ({"fault": "iopf-storm"}, Injection("iopf-storm")),
    ({"fault": "reset-fail"}, Injection("reset-fail", count=1)),
    ({"fault": "reset-fail", "count": 3}, Injection("reset-fail", count=3)),
    ({"fault": "cqe-error", "qp": 0}, Injection("cqe-error", qp=0)),
    ({"fault": "cqe-error", "qp": 0xFFFF}, Injection("cqe-error", qp=0xFFFF)),
    ({"fault": "eq-overflow"}, Injection("eq-overflow")),
    ({"fault": "crash"}, Injection("crash")),
])
def test_an_injection_is_parsed(message: cdev.Message, parsed: Injection) -> None:
    assert Injection.parse({"cmd": "inject", **message}) == parsed


@pytest.mark.parametrize(("message", "words"), [
    ({"fault": "hang", "seconds": -1}, "--seconds"),
    ({"fault": "hang", "seconds": float("inf")}, "--seconds"),
    ({"fault": "hang", "seconds": float("nan")}, "--seconds"),
    ({"fault": "hw-error", "count": 0}, "--count"),
    ({"fault": "reset-fail", "count": 0}, "--count"),
    ({"fault": "cqe-error"}, "--qp"),
    ({"fault": "cqe-error", "qp": 0x10000}, "--qp"),
    ({"fault": "slow"}, "--factor"),
    ({"fault": "slow", "factor": 0.5}, "--factor"),
    ({"fault": "slow", "factor": MAX_SLOW_FACTOR * 2}, "--factor"),
    ({"fault": "melt"}, "unknown fault"),
    ({}, "unknown fault"),
])
def test_an_injection_out_of_range_is_refused_with_einval(message: cdev.Message, words: str) -> None:
    with pytest.raises(OSError) as refused:
        Injection.parse({"cmd": "inject", **message})
    assert refused.value.errno == errno.EINVAL
    assert words in str(refused.value)
