"""ABI layouts and doorbell encoding against reference/uacce.md §2.3–§2.7."""

from __future__ import annotations

import pytest

from warp import abi


def test_sqe_and_cqe_sizes() -> None:
    assert abi.SQE_DTYPE.itemsize == 128
    assert abi.CQE_DTYPE.itemsize == 16
    assert abi.CQE_DTYPE.fields is not None
    assert abi.CQE_DTYPE.fields["sq_head"][1] == 8  # +8 in struct qm_cqe
    assert abi.CQE_DTYPE.fields["w7"][1] == 14


def test_dus_geometry_matches_qm() -> None:
    # qm_alloc_uacce: (PAGE_SIZE-1 + 128*1024 + 16*1024 + PAGE_SIZE) >> PAGE_SHIFT = 37 pages
    assert abi.DUS_SIZE == 37 * 4096 == 151552
    assert abi.CQ_OFFSET == 128 * 1024
    assert abi.TX_STOP_OFFSET == abi.DUS_SIZE - 4
    assert abi.RX_STOP_OFFSET == abi.DUS_SIZE - 8


@pytest.mark.parametrize(("qn", "cmd", "index", "prio"), [
    (0, abi.DoorbellCmd.SQ, 0, 0),
    (5, abi.DoorbellCmd.CQ, 1023, 1),
    (0xFFF, abi.DoorbellCmd.AEQ, 0xFFFF, 0xFFFF),
])
def test_doorbell_roundtrip(qn: int, cmd: abi.DoorbellCmd, index: int, prio: int) -> None:
    word = abi.encode_doorbell(qn, cmd, index, prio)
    assert abi.decode_doorbell(word) == (qn, cmd, index, prio)


def test_doorbell_bit_layout_v2() -> None:
    word = abi.encode_doorbell(3, abi.DoorbellCmd.CQ, 0x12, 1)
    assert word & 0xFFF == 3  # qn[11:0]
    assert (word >> 12) & 0xF == 1  # cmd[15:12]
    assert (word >> 16) & 0xFFFF == 0  # randata
    assert (word >> 32) & 0xFFFF == 0x12  # index[47:32]
    assert word >> 48 == 1  # priority[63:48]


def test_separate_latches_per_command() -> None:
    offsets = {abi.doorbell_offset(c) for c in abi.DoorbellCmd}
    assert len(offsets) == 4
    assert min(offsets) == abi.DOORBELL_BASE
    assert max(offsets) + 8 <= abi.MMIO_SIZE


@pytest.mark.parametrize("level", [-7, -1, 0, 3, 22])
def test_signed_level_word(level: int) -> None:
    word = abi.level_to_word(level)
    assert 0 <= word < 1 << 32
    assert abi.word_to_level(word) == level
