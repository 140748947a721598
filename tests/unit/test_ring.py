"""The sans-I/O ring protocol: wrap-around at depth 1024, a full ring, the phase flip."""

from __future__ import annotations

import numpy as np
import pytest

from warp import abi
from warp.ring import CqConsumer, CqProducer, DusView, RingFull, RingOverflow, SqConsumer, SqProducer


@pytest.fixture
def dus() -> DusView:
    return DusView.over(memoryview(bytearray(abi.DUS_SIZE)))


def test_view_geometry() -> None:
    buf = bytearray(abi.DUS_SIZE)
    dus = DusView.over(memoryview(buf))
    assert len(dus.sq) == 1024 * 32 and len(dus.cq) == 1024 * 8
    assert not dus.tx_stopped and not dus.rx_stopped
    dus.stop()
    assert dus.tx_stopped and dus.rx_stopped
    assert buf[abi.TX_STOP_OFFSET] == 1 and buf[abi.RX_STOP_OFFSET] == 1


def test_sq_full_keeps_one_slot_empty() -> None:
    sq = SqProducer()
    for _ in range(1023):
        sq.push()
    assert sq.free == 0
    with pytest.raises(RingFull):
        sq.push()
    sq.retire(1)
    assert sq.push() == 1023  # the last slot of the ring, then the tail wraps
    assert sq.tail == 0


def test_sq_consumer_follows_tail_across_wrap() -> None:
    prod, cons = SqProducer(), SqConsumer()
    seen: list[int] = []
    for _round in range(3):  # 3 × 700 slots crosses the 1024 boundary twice
        for _ in range(700):
            prod.push()
        while cons.pending(prod.tail):
            seen.append(cons.pop())
        prod.retire(700)
    assert seen == [i % 1024 for i in range(2100)]


def test_cq_phase_flips_on_wrap(dus: DusView) -> None:
    prod, cons = CqProducer(), CqConsumer()
    assert cons.poll(dus.cq) is None  # zeroed memory has phase 0, consumer expects 1
    for i in range(2500):
        prod.post(dus.cq, sq_head=i % 1024, sq_num=7)
        assert cons.poll(dus.cq) == i % 1024
        assert cons.poll(dus.cq) is None  # stale entries of the previous lap are invalid
        prod.doorbell(cons.head)
        if i == 1023:
            assert prod.phase == 0 and cons.phase == 0
        if i == 2047:
            assert prod.phase == 1 and cons.phase == 1


def test_cqe_fields(dus: DusView) -> None:
    prod = CqProducer()
    prod.post(dus.cq, sq_head=42, sq_num=9)
    raw = np.frombuffer(dus.cq.tobytes()[:16], dtype=abi.CQE_DTYPE)[0]  # the C struct layout
    assert raw["sq_head"] == 42 and raw["sq_num"] == 9 and raw["w7"] & 1 == 1


def test_cq_overflow_without_doorbell(dus: DusView) -> None:
    prod = CqProducer()
    for i in range(1023):
        prod.post(dus.cq, i, 0)
    with pytest.raises(RingOverflow):
        prod.post(dus.cq, 0, 0)
    prod.doorbell(10)  # consumer returned 10 slots
    prod.post(dus.cq, 0, 0)
    assert prod.free == 9


def test_retire_more_than_used_is_a_bug() -> None:
    sq = SqProducer()
    sq.push()
    with pytest.raises(ValueError):
        sq.retire(2)
