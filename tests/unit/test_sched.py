"""Queue schedulers: round-robin per job, and least-loaded with the first queue winning ties."""

from __future__ import annotations

from dataclasses import dataclass

from warp.sched import LeastLoaded, RoundRobin


@dataclass
class FakeQueue:
    name: str
    load: int = 0


def test_round_robin_cycles_through_queues() -> None:
    queues = [FakeQueue("a"), FakeQueue("b"), FakeQueue("c")]
    sched = RoundRobin()
    assert [sched.pick(queues).name for _ in range(7)] == list("abcabca")


def test_least_loaded_fills_the_first_queue_until_it_has_a_backlog() -> None:
    a, b = FakeQueue("a"), FakeQueue("b")
    sched = LeastLoaded()
    assert sched.pick([a, b]) is a  # a tie goes to the first queue: one engine, big batches
    a.load = 3
    assert sched.pick([a, b]) is b
    b.load = 5
    assert sched.pick([a, b]) is a
