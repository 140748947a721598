"""The message pool: tags are slot + 1, a full pool is Busy, a stray tag matches nothing."""

from __future__ import annotations

import pytest

from warp.drv.base import Job
from warp.drv.pool import MsgPool
from warp.errors import Busy


def job() -> Job:
    return Job.__new__(Job)  # the pool only keeps and returns it


def test_tags_are_slots_plus_one_and_come_back() -> None:
    pool = MsgPool(3)
    a, b = job(), job()
    assert (pool.take(a), pool.take(b)) == (1, 2)
    assert pool.used == 2
    assert pool.put(1) is a
    assert pool.take(job()) == 1  # the freed slot first
    assert pool.put(2) is b and pool.used == 1


def test_a_full_pool_is_busy_until_a_completion_frees_a_slot() -> None:
    pool = MsgPool(2)
    pool.take(job())
    pool.take(job())
    with pytest.raises(Busy):
        pool.take(job())
    pool.put(2)
    assert pool.take(job()) == 2


@pytest.mark.parametrize("tag", [0, 3, 99, 2])
def test_a_tag_not_in_flight_matches_nothing_and_is_counted(tag: int) -> None:
    pool = MsgPool(2)
    pool.take(job())
    assert pool.put(tag) is None
    assert pool.strays == 1 and pool.used == 1


def test_clear_returns_every_request_in_flight() -> None:
    pool = MsgPool(4)
    jobs = [job() for _ in range(3)]
    for j in jobs:
        pool.take(j)
    pool.put(2)
    assert pool.clear() == [jobs[0], jobs[2]]
    assert pool.used == 0 and pool.take(job()) == 1
