"""lz77_zstd (reference §2.7, §3.9, §7 item 11): the engine's LZ77 pass per ≤ 128 KiB BD in the flat
literals | seqDefs | overflow | freq layout with its SQE words, and the software stage that makes
one zstd frame of the BDs — decoded by the real ``zstd`` CLI and python-zstandard."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zstandard

from tests.harness import DeviceProc, device_cli, require_tool
from tests.integration.fidelity import RawQueue, loaded_space, queue_and_counters
from warp import abi, lz77
from warp.codec import ffi
from warp.drv.base import Job
from warp.errors import JobFailed
from warp.runtime import Runtime
from warp.session import Lz77Compressor

KIB = 1 << 10
MIB = 1 << 20
OUT = 2 * MIB  # where loaded_space's prefaulted output pages start


def unzstd_cli(frame: bytes, tmp_path: Path) -> bytes:
    """What ``zstd -d`` makes of the frame: the real decoder, not our library."""
    packed = tmp_path / "frame.zst"
    packed.write_bytes(frame)
    subprocess.run([require_tool("zstd"), "-q", "-d", "-f", str(packed), "-o", str(tmp_path / "out")], check=True)
    return (tmp_path / "out").read_bytes()


def unzstd(frame: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompress(frame)


@pytest.fixture
def runtime(device: DeviceProc) -> Iterator[Runtime]:
    rt = Runtime(device.root, driver="zip", heap_size=128 * MIB)
    yield rt
    rt.close()


@pytest.mark.parametrize("name", ["dickens", "mr", "x-ray", "xml"])
def test_lz77_zstd_frames_decode_to_the_input_with_the_zstd_cli(runtime: Runtime, corpus: dict[str, Path], name: str,
                                                                 tmp_path: Path) -> None:
    data = corpus[name].read_bytes()[:MIB + 12345]  # eight full BDs and a short one
    frame = runtime.compressor(3, False, "lz77_zstd").compress(data)
    assert unzstd_cli(frame, tmp_path) == data
    assert unzstd(frame) == data
    device = runtime.statistics().device
    assert device is not None and device.completed == 9 and device.failed == 0  # the engine ran every BD
    # Within a sane bound of plain zstd: ZIP's 4 KiB window at level 3 costs some ratio, not most.
    plain = len(zstandard.ZstdCompressor(level=3).compress(data))
    assert plain <= len(frame) * 1.25 and len(frame) < len(data)


def test_price_mode_async_frame_decodes_and_the_cpu_gives_the_same_frame(runtime: Runtime, device: DeviceProc,
                                                                          corpus: dict[str, Path]) -> None:
    data = corpus["xml"].read_bytes()[:300 * KIB]
    session = runtime.compressor(19, False, "lz77_zstd")
    assert (session.hw_level, session.window) == (9, 3)  # KAEZstd: 18–19 → L9 / 24 KiB
    frame = asyncio.run(session.acompress(data))
    assert unzstd(frame) == data
    with Runtime(device.root, driver="cpu", heap_size=16 * MIB) as cpu:
        assert cpu.compressor(19, False, "lz77_zstd").compress(data) == frame


@pytest.mark.parametrize("checksum", [False, True])
def test_a_body_already_in_the_heap_gives_the_same_frame_and_is_freed(runtime: Runtime, corpus: dict[str, Path],
                                                                      checksum: bool) -> None:
    """``acompress_buffer`` (the service's path: BDs are windows of the body's own buffer) frames
    exactly as ``acompress`` of the same bytes, and frees the buffer it took over, also on failure."""
    data = corpus["dickens"].read_bytes()[:5 * 128 * KIB + 77]
    session = runtime.compressor(3, checksum, "lz77_zstd")
    in_use = runtime.statistics().heap.in_use_bytes
    src = runtime.load(data)
    frame = asyncio.run(session.acompress_buffer(src, len(data)))
    assert frame == asyncio.run(session.acompress(data))
    assert unzstd(frame) == data
    failing = runtime.load(data)
    with pytest.raises(JobFailed):  # a BD the engine refuses: window code 7 is no window
        asyncio.run(_with_window(session, 7).acompress_buffer(failing, len(data)))
    assert runtime.statistics().heap.in_use_bytes == in_use


@pytest.mark.parametrize("data", [b"", b"abc", b"abcdefg" * 3, bytes(3 * 128 * KIB + 5)],
                         ids=["empty", "shorter-than-a-match", "tiny", "zeros"])
def test_edge_inputs_make_valid_frames(runtime: Runtime, data: bytes) -> None:
    frame = runtime.compressor(3, False, "lz77_zstd").compress(data)
    assert unzstd(frame) == data
    assert zstandard.frame_content_size(frame) == len(data)


def test_incompressible_input_and_checksums_are_framed_from_the_source(runtime: Runtime, tmp_path: Path) -> None:
    """zstd's literals API refuses a block it would store raw, and a checksum: the frame is then
    built from the sequences and the source."""
    data = np.random.default_rng(7).bytes(200 * KIB)
    frame = runtime.compressor(3, False, "lz77_zstd").compress(data)
    assert unzstd(frame) == data and len(frame) < len(data) + 1 * KIB
    text = b"checksummed " * 20000
    checked = runtime.compressor(5, True, "lz77_zstd").compress(text)
    assert zstandard.get_frame_parameters(checked).has_checksum
    assert unzstd_cli(checked, tmp_path) == text


def test_unknown_algorithm_and_level_are_refused(runtime: Runtime) -> None:
    with pytest.raises(ValueError, match="algorithm"):
        runtime.compressor(3, False, "lz4")  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="level"):
        runtime.compressor(23, False, "lz77_zstd")


def _reference_pass(data: bytes, level: int, window: int) -> lz77.Pass:
    array = np.frombuffer(data, np.uint8).copy()
    return lz77.Lz77().run(ffi.from_buffer(array), array, level, window)


def _expand(literals: bytes, seqdefs: np.ndarray, overflow: int, length: int) -> bytes:
    """The input rebuilt from literals and seqDefs the way the reference defines them (offBase =
    offset + 3, matchLength − 3, litLength's high bits in dw31): an independent decoder."""
    out = bytearray()
    lit_at = 0
    position, high = abi.lit_overflow(overflow)
    for i, (offbase, lit, mlbase) in enumerate(seqdefs.tolist()):
        lit += (high << 16) if high and i == position else 0
        out += literals[lit_at:lit_at + lit]
        lit_at += lit
        offset = offbase - abi.OFFBASE
        for _ in range(mlbase + abi.MINMATCH):
            out.append(out[-offset])
    out += literals[lit_at:]
    assert len(out) == length
    return bytes(out)


@pytest.mark.parametrize(("alg", "level"), [(abi.Alg.LZ77_ZSTD, 8), (abi.Alg.LZ77_ZSTD_PRICE, 9)])
def test_engine_writes_the_flat_layout_and_sqe_words(device: DeviceProc, corpus: dict[str, Path], alg: abi.Alg,
                                                     level: int) -> None:
    data = corpus["dickens"].read_bytes()[:abi.ZSTD_MAX_SIZE]
    space = loaded_space(8 * MIB, data)
    lits_size = lz77.literal_size(len(data))
    seq_area = lz77.output_size(len(data)) - lits_size
    try:
        with queue_and_counters(device.root, space) as (q, _counters):
            slot = _lz77_sqe(q, alg, level, len(data), lits_size, seq_area, window=2)
            q.doorbell()
            (done,) = q.wait(1)
            base = slot * abi.SQ_WORDS
            words = [int(q.words[base + i]) for i in range(abi.SQ_WORDS)]
        expected = _reference_pass(data, level, 2)
        assert (done.status, done.consumed, done.produced) == (abi.Status.OK, len(data), expected.sequences)
        assert words[abi.W.LIT_NUM] == len(expected.literals)  # dw2: literal count
        assert words[abi.W.LIT_SIZE] == lits_size and words[abi.W.DEST_AVAIL] == seq_area  # dw13/dw14 as written
        assert words[abi.W.LIT_OVERFLOW] == expected.overflow == 0
        memory = space.view
        literals = bytes(memory[OUT:OUT + words[abi.W.LIT_NUM]])
        assert literals == expected.literals.tobytes()
        start = OUT + lits_size
        area = bytes(memory[start:start + len(expected.area)])
        assert area == expected.area.tobytes()  # seqDefs, then 8 B overflow and 784 B freq (zeros)
        seqdefs = np.frombuffer(area, abi.SEQDEF_DTYPE, done.produced)
        assert _expand(literals, seqdefs, words[abi.W.LIT_OVERFLOW], len(data)) == data
    finally:
        space.close()


def _lz77_sqe(q: RawQueue, alg: int, level: int, length: int, lits_size: int, seq_area: int, window: int = 0,
              src: int = 0) -> int:
    lits, dst = q.space.address(OUT), q.space.address(OUT + lits_size)
    return q.write_words({
        abi.W.INPUT_LEN: length, abi.W.REQ_TYPE: alg | window << abi.WINDOW_SHIFT, abi.W.LEVEL: level,
        abi.W.LIT_SIZE: lits_size, abi.W.DEST_AVAIL: seq_area,
        abi.W.SRC_LO: q.space.address(src) & 0xFFFFFFFF, abi.W.SRC_HI: q.space.address(src) >> 32,
        abi.W.LIT_LO: lits & 0xFFFFFFFF, abi.W.LIT_HI: lits >> 32,
        abi.W.DST_LO: dst & 0xFFFFFFFF, abi.W.DST_HI: dst >> 32})


def test_long_literal_run_overflows_into_dw31_and_long_matches_are_cut(device: DeviceProc) -> None:
    head = np.random.default_rng(3).bytes(70000)  # 70000 literals before the first match
    data = head + head[:20000] + bytes(40000)
    space = loaded_space(8 * MIB, data)
    lits_size = lz77.literal_size(len(data))
    try:
        with queue_and_counters(device.root, space) as (q, _counters):
            _lz77_sqe(q, abi.Alg.LZ77_ZSTD, 8, len(data), lits_size, lz77.output_size(len(data)) - lits_size, 4)
            q.doorbell()
            (done,) = q.wait(1)
            overflow = int(q.words[done.slot * abi.SQ_WORDS + abi.W.LIT_OVERFLOW])
            literals = int(q.words[done.slot * abi.SQ_WORDS + abi.W.LIT_NUM])
        assert done.status == abi.Status.OK
        assert abi.lit_overflow(overflow) == (0, 70000 >> 16)  # sequence 0, litLength >> 16 = 1
        memory = space.view
        seqdefs = np.frombuffer(bytes(memory[OUT + lits_size:OUT + lits_size + 8 * done.produced]),
                                abi.SEQDEF_DTYPE)
        assert _expand(bytes(memory[OUT:OUT + literals]), seqdefs, overflow, len(data)) == data
    finally:
        space.close()
    zeros = bytes(abi.ZSTD_MAX_SIZE)  # one match of 131071 bytes at offset 1: over one seqDef's reach
    cut = _reference_pass(zeros, 8, 4)
    seqdefs = cut.area[:8 * cut.sequences].view(abi.SEQDEF_DTYPE)
    assert cut.sequences >= 2 and _expand(cut.literals.tobytes(), seqdefs, cut.overflow, len(zeros)) == zeros


@pytest.mark.parametrize(("change", "status"), [
    ({"length": abi.ZSTD_MAX_SIZE + 1}, abi.Status.BAD_LENGTH),  # over ZSTD_MAX_SIZE
    ({"level": 7}, abi.Status.BAD_LEVEL),  # only L8 and L9
    ({"level": 9}, abi.Status.BAD_LEVEL),  # L9 is the price code's, not 0x43's
    ({"window": 5}, abi.Status.BAD_LEVEL),  # window codes 0..4
    ({"lits_size": 1000}, abi.Status.DST_TOO_SMALL),  # under src_len + 16
    ({"seq_area": 800}, abi.Status.DST_TOO_SMALL),  # the sequences do not fit before the freq table
    ({"alg": 0x41}, abi.Status.BAD_ALG),  # HW_LZ77_ONLY_PRICE: not modelled
])
def test_bad_lz77_sqes_fail_with_their_status(device: DeviceProc, corpus: dict[str, Path], change: dict[str, int],
                                              status: abi.Status) -> None:
    data = corpus["xml"].read_bytes()[:abi.ZSTD_MAX_SIZE + 1]
    params = {"alg": int(abi.Alg.LZ77_ZSTD), "level": 8, "length": abi.ZSTD_MAX_SIZE, "window": 0,
              "lits_size": lz77.literal_size(abi.ZSTD_MAX_SIZE + 1), "seq_area": 64 * KIB} | change
    space = loaded_space(8 * MIB, data)
    try:
        with queue_and_counters(device.root, space) as (q, _counters):
            _lz77_sqe(q, params["alg"], params["level"], params["length"], params["lits_size"], params["seq_area"],
                      params["window"])
            q.doorbell()
            (done,) = q.wait(1)
        assert (done.status, done.consumed, done.produced) == (status, 0, 0)
    finally:
        space.close()
    # The cpu driver's pass refuses the same BDs with the same status (failover changes nothing);
    # its buffer sizes come from the job, so only the SQE's own fields can be wrong there.
    if params["alg"] in lz77.ALGORITHM.values() and not {"seq_area", "lits_size"} & change.keys():
        with Runtime(device.root, driver="cpu", heap_size=16 * MIB) as cpu:
            job = Job(direction=abi.QcType.COMPRESS, src=cpu.load(data), length=params["length"],
                      dst=cpu.alloc(lz77.output_size(len(data))), level=params["level"],
                      algorithm=abi.Alg(params["alg"]), window=params["window"])
            cpu.cpu.run([job], timeout=30)
            assert job.status == status
            job.abandon()


def test_hardware_errors_mid_frame_rerun_those_bds_on_the_cpu(runtime: Runtime, device: DeviceProc,
                                                              corpus: dict[str, Path]) -> None:
    """A hardware error resets the controller, which stops the queue: the failed BD and the ones
    still in flight behind it re-run on the cpu, and the frame is the one the device would give."""
    data = corpus["mr"].read_bytes()[:MIB]
    expected = runtime.compressor(3, False, "lz77_zstd").compress(data)
    assert device_cli(device.root, "inject", "hw-error", "--count", "3").returncode == 0
    frame = runtime.compressor(3, False, "lz77_zstd").compress(data)
    assert frame == expected and unzstd(frame) == data
    assert 1 <= runtime.fallback_jobs <= -(-len(data) // abi.ZSTD_MAX_SIZE)


def test_a_dead_device_leaves_lz77_zstd_to_the_cpu(device: DeviceProc, corpus: dict[str, Path]) -> None:
    data = corpus["dickens"].read_bytes()[:600 * KIB]
    with Runtime(device.root, driver="auto", heap_size=64 * MIB) as rt:
        session = rt.compressor(3, False, "lz77_zstd")
        expected = session.compress(data)
        device_cli(device.root, "inject", "crash")
        device.proc.wait(timeout=10)

        async def both() -> list[bytes]:
            return list(await asyncio.gather(session.acompress(data), session.acompress(data[:1000])))

        frames = asyncio.run(both())
        assert frames[0] == expected and unzstd(frames[1]) == data[:1000]
        assert rt.statistics().driver == "cpu"


def test_cpu_pass_refuses_a_destination_the_sequences_do_not_fit(device: DeviceProc) -> None:
    data = b"abcd" * 1000
    with Runtime(device.root, driver="cpu", heap_size=16 * MIB) as cpu:
        job = Job(direction=abi.QcType.COMPRESS, src=cpu.load(data), length=len(data),
                  dst=cpu.alloc(lz77.literal_size(len(data))), level=8, algorithm=abi.Alg.LZ77_ZSTD)
        cpu.cpu.run([job], timeout=30)
        assert (job.status, job.literals) == (abi.Status.DST_TOO_SMALL, 0)
        job.abandon()


def test_random_lz77_sqes_complete_with_a_status_and_never_crash(device: DeviceProc) -> None:
    """lz77_zstd codes with garbage lengths, levels, windows, buffer sizes and addresses: each SQE
    completes with some status, and a good BD after them still runs."""
    rng = random.Random(77)
    space = loaded_space(8 * MIB, b"lz77 fuzz " * 30000)
    try:
        with queue_and_counters(device.root, space) as (q, _counters):
            for _ in range(100):
                words = {i: rng.getrandbits(32) for i in range(abi.SQ_WORDS)}
                lits, dst = (rng.choice([OUT, OUT + 200 * KIB, rng.getrandbits(47)]) for _ in range(2))
                src = rng.choice([0, rng.getrandbits(47)])
                words |= {abi.W.REQ_TYPE: rng.choice(list(lz77.ALGORITHM.values())) | rng.randint(0, 6) << 12,
                          abi.W.LEVEL: rng.randint(7, 10),
                          abi.W.INPUT_LEN: rng.choice([0, 5, 4096, 128 * KIB, 200 * KIB]),
                          abi.W.LIT_SIZE: rng.choice([0, 200 * KIB, rng.getrandbits(32)]),
                          abi.W.DEST_AVAIL: rng.choice([0, 1000, 100 * KIB, rng.getrandbits(32)]),
                          abi.W.SRC_LO: space.address(src) & 0xFFFFFFFF, abi.W.SRC_HI: space.address(src) >> 32,
                          abi.W.LIT_LO: space.address(lits) & 0xFFFFFFFF, abi.W.LIT_HI: space.address(lits) >> 32,
                          abi.W.DST_LO: space.address(dst) & 0xFFFFFFFF, abi.W.DST_HI: space.address(dst) >> 32}
                q.write_words(words)
            q.doorbell()
            got = q.wait(100)
            assert len(got) == 100 and {c.status for c in got} <= {int(s) for s in abi.Status}
            assert any(c.status == abi.Status.OK for c in got)
            size = lz77.literal_size(4096)
            _lz77_sqe(q, abi.Alg.LZ77_ZSTD, 8, 4096, size, 64 * KIB)
            q.doorbell()
            assert q.wait(1)[0].status == abi.Status.OK
        assert device.proc.poll() is None
    finally:
        space.close()


def test_device_killed_mid_frame_finishes_the_frame_on_the_cpu(device: DeviceProc, corpus: dict[str, Path]) -> None:
    """BDs in flight when the device dies are re-run on the cpu (same pass, same output): the
    frame is the one the cpu alone would have made."""
    data = corpus["dickens"].read_bytes()[:4 * MIB]
    with Runtime(device.root, driver="cpu", heap_size=64 * MIB) as cpu:
        expected = cpu.compressor(19, False, "lz77_zstd").compress(data)
    with Runtime(device.root, driver="auto", heap_size=64 * MIB) as rt:

        async def main() -> bytes:
            task = asyncio.ensure_future(rt.compressor(19, False, "lz77_zstd").acompress(data))
            await asyncio.sleep(0.05)  # L9 on 32 BDs keeps the one engine busy for far longer
            assert not task.done()
            os.kill(device.pid, signal.SIGKILL)
            return await task

        assert asyncio.run(main()) == expected
        assert 0 < rt.fallback_jobs <= 32


def _with_window(session: Lz77Compressor, window: int) -> Lz77Compressor:
    """A session whose BDs ask for ``window`` (an SQE field the library never sets out of range)."""
    bad = Lz77Compressor(session.runtime, session.level, session.checksum)
    bad.window = window
    return bad
