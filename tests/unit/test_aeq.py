"""The AEQ (``warp.device.aeq``): the AEQE word of qm.c, the phase protocol across a wrap, the
doorbell that gives slots back, a full ring losing the event, and the driver thread handing
events to its handler in order."""

from __future__ import annotations

import threading

import pytest

from tests.integration.fidelity import wait_for
from warp.device.aeq import Aeq, AeqRing, AeqType, decode, encode


def test_aeqe_word_is_qp_id_phase_and_type() -> None:
    """dw0: qp_id[15:0], phase bit 16, type = dw0 >> 17 (QM_CQ_OVERFLOW 0, QM_EQ_OVERFLOW 1, QM_CQE_ERROR 2)."""
    assert [int(t) for t in AeqType] == [0, 1, 2]
    word = encode(0x1234, AeqType.CQE_ERROR, 1)
    assert word == 0x1234 | 1 << 16 | 2 << 17
    assert decode(word) == (0x1234, AeqType.CQE_ERROR)
    assert decode(encode(7, AeqType.CQ_OVERFLOW, 0)) == (7, 0)


def test_the_consumer_follows_the_phase_across_wraps() -> None:
    ring = AeqRing(depth=4)
    assert ring.take() == [], "zeroed memory has phase 0: nothing is valid for the initial phase 1"
    seen: list[tuple[int, int]] = []
    for qp in range(10):  # two and a half laps: the phase flips at each wrap on both sides
        assert ring.post(qp, AeqType.CQE_ERROR)
        seen += [decode(w) for w in ring.take()]
        ring.doorbell(ring.head)
    assert seen == [(qp, AeqType.CQE_ERROR) for qp in range(10)]
    assert ring.take() == [], "a consumed slot is not seen twice"


def test_a_full_ring_loses_the_event_until_the_doorbell_returns_slots() -> None:
    """One slot stays empty (as the SQ): depth - 1 events fit; the doorbell frees what was taken."""
    ring = AeqRing(depth=4)
    assert [ring.post(q, AeqType.CQ_OVERFLOW) for q in range(4)] == [True, True, True, False]
    assert [decode(w)[0] for w in ring.take()] == [0, 1, 2]
    assert not ring.post(9, AeqType.CQ_OVERFLOW), "taken but not returned: still full"
    ring.doorbell(ring.head)
    assert ring.post(9, AeqType.CQ_OVERFLOW)
    assert [decode(w)[0] for w in ring.take()] == [9]


def test_the_driver_thread_handles_events_in_order_and_counts_lost_ones() -> None:
    handled: list[tuple[int, AeqType]] = []
    lost: list[int] = []
    gate = threading.Event()

    def handle(qp: int, kind: AeqType) -> None:
        gate.wait(10)
        handled.append((qp, kind))

    aeq = Aeq(handle, lambda: lost.append(1), depth=4)
    try:
        aeq.post(1, AeqType.CQE_ERROR)  # the thread takes it and blocks in the handler
        assert wait_for(lambda: aeq._ring.head == 1)  # noqa: SLF001 -- where the driver is
        # Of four slots one stays empty and one holds the event being handled (taken, but not
        # returned until the doorbell after the walk): two fit, the third is lost.
        for qp in (2, 3, 4):
            aeq.post(qp, AeqType.CQ_OVERFLOW)
        assert lost == [1]
        gate.set()
        assert wait_for(lambda: len(handled) == 3)
        assert handled == [(1, AeqType.CQE_ERROR), (2, AeqType.CQ_OVERFLOW), (3, AeqType.CQ_OVERFLOW)]
        aeq.post(6, AeqType.EQ_OVERFLOW)  # the doorbell gave the slots back
        assert wait_for(lambda: handled[-1] == (6, AeqType.EQ_OVERFLOW))
    finally:
        gate.set()
        aeq.close()


def test_an_unknown_event_type_is_logged_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    """qm_aeq_thread's default case: "unknown error type", and the walk goes on."""
    handled: list[tuple[int, AeqType]] = []
    aeq = Aeq(lambda qp, kind: handled.append((qp, kind)), lambda: None, depth=8)
    try:
        aeq.post(3, 5)
        aeq.post(4, AeqType.CQE_ERROR)
        assert wait_for(lambda: handled == [(4, AeqType.CQE_ERROR)])
        assert "unknown error type 5" in caplog.text
    finally:
        aeq.close()
