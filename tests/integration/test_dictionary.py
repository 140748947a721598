"""zstd dictionaries through a real device: the SQE words, the engines' loaded-dictionary cache
(one load per engine and context, counted in DFX), unknown ids, and the cpu driver's failover."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from bench.events import events
from tests.harness import DeviceProc, device_cli, start_device
from warp import JobFailed, Runtime, abi
from warp.cdev import DevicePaths
from warp.device.launch import stop_process
from warp.dfx import Engine, read_snapshot
from warp.dictionary import Dictionary, Resolver
from warp.errors import MixedDictionaries, UnknownDictionary


def train(size: int, samples: list[bytes]) -> bytes:
    return zstandard.train_dictionary(size, list[bytes | bytearray | memoryview](samples)).as_bytes()


@pytest.fixture(scope="module")
def trained() -> bytes:
    return train(16 << 10, events(400))


@pytest.fixture
def runtime(device: DeviceProc) -> Iterator[Runtime]:
    rt = Runtime(device.root, driver="zip", heap_size=128 << 20)
    yield rt
    rt.close()


def engine_loads(device: DeviceProc) -> list[int]:
    return [row[Engine.DICT_LOADS] for row in read_snapshot(DevicePaths(device.root, "warp_zip-0").dfx).engines]


def roundtrip(runtime: Runtime, d: Dictionary, bodies: list[bytes], level: int = 3) -> list[bytes]:
    """Each body compressed with ``d`` and decompressed again (the resolver knows only ``d``)."""
    frames = [bytes(r.view) for r in runtime.compressor(level, dictionary=d).compress_many(bodies)]
    resolver: Resolver = {d.dict_id: d}.get
    back = [bytes(r.view) for r in runtime.decompressor(1 << 20, resolver).decompress_many(frames)]
    assert back == bodies
    return frames


def test_frames_name_the_dictionary_and_decode_with_zstd(runtime: Runtime, trained: bytes) -> None:
    d = runtime.dictionary(trained)
    bodies = events(50, seed=7)
    frames = roundtrip(runtime, d, bodies)
    assert runtime.driver.name == "zip"
    assert {zstandard.get_frame_parameters(f).dict_id for f in frames} == {d.dict_id} != {0}
    offline = zstandard.ZstdDecompressor(dict_data=zstandard.ZstdCompressionDict(trained))
    assert [offline.decompress(f) for f in frames] == bodies
    plain = sum(len(runtime.compress(b, 3)) for b in bodies)
    assert plain / sum(map(len, frames)) >= 2.0, "a trained dictionary should at least halve these frames"


def test_checksum_and_level_hold_with_a_dictionary(runtime: Runtime, trained: bytes) -> None:
    d = runtime.dictionary(trained)
    body = events(1, seed=3)[0]
    with runtime.compressor(19, checksum=True, dictionary=d).compress(body) as frame:
        params = zstandard.get_frame_parameters(bytes(frame.view))
    assert params.has_checksum and params.dict_id == d.dict_id


def test_a_frame_naming_an_unknown_dictionary_fails_before_any_job(runtime: Runtime, trained: bytes) -> None:
    d = runtime.dictionary(trained)
    with runtime.compressor(3, dictionary=d).compress(events(1)[0]) as result:
        frame = result.tobytes()
    nobody: dict[int, Dictionary] = {}
    for resolver in (None, nobody.get):
        with pytest.raises(UnknownDictionary) as caught:
            runtime.decompressor(1 << 20, resolver).decompress(frame)
        assert caught.value.dict_id == d.dict_id and caught.value.status == abi.Status.CORRUPT_INPUT
    assert runtime.statistics().heap.in_use_bytes == d.buffer.capacity, "the refused job left no buffer behind"


def test_a_later_frame_names_the_bodys_dictionary(runtime: Runtime, trained: bytes) -> None:
    """A body of concatenated frames decodes with the one dictionary any of them names, not only
    the first frame's: a plain frame, then a frame with the dictionary (and a skippable frame)."""
    d = runtime.dictionary(trained)
    first, second = events(2, seed=12)
    with runtime.compressor(3).compress(first) as plain, runtime.compressor(3, dictionary=d).compress(second) as named:
        skippable = (0x184D2A50).to_bytes(4, "little") + (3).to_bytes(4, "little") + b"abc"
        for body, content in ((plain.tobytes() + skippable + named.tobytes(), first + second),
                              (named.tobytes() + plain.tobytes(), second + first)):
            with runtime.decompressor(1 << 20, {d.dict_id: d}.get).decompress(body) as result:
                assert result.tobytes() == content


def test_frames_naming_two_dictionaries_fail_before_any_job(runtime: Runtime, trained: bytes) -> None:
    """One job decodes with one dictionary (as ``zstd -D`` takes one): a body whose frames name two
    is refused, naming both, instead of failing in the engine as a corrupt frame."""
    one, two = runtime.dictionary(trained), runtime.dictionary(train(8 << 10, events(300, seed=9)))
    frames = []
    for d, body in ((one, b"1" * 90), (two, b"2" * 90)):
        with runtime.compressor(3, dictionary=d).compress(body) as frame:
            frames.append(frame.tobytes())
    with pytest.raises(MixedDictionaries) as caught:
        runtime.decompressor(1 << 20, {one.dict_id: one, two.dict_id: two}.get).decompress(b"".join(frames))
    assert caught.value.dict_ids == (one.dict_id, two.dict_id) and caught.value.status == abi.Status.CORRUPT_INPUT
    in_use = one.buffer.capacity + two.buffer.capacity
    assert runtime.statistics().heap.in_use_bytes == in_use, "the refused job left no buffer behind"


def test_a_decompression_stream_takes_frames_naming_different_dictionaries(runtime: Runtime, trained: bytes) -> None:
    """What a whole body refuses, a stream takes: each frame starts a context of its own, with the
    dictionary that frame names (or none)."""
    import asyncio

    one, two = runtime.dictionary(trained), runtime.dictionary(train(8 << 10, events(300, seed=9)))
    bodies = events(3, seed=13)
    frames = []
    for d, body in zip((one, None, two), bodies, strict=True):
        with runtime.compressor(3, dictionary=d).compress(body) as frame:
            frames.append(frame.tobytes())

    async def decode() -> bytes:
        stream = runtime.decompress_stream({one.dict_id: one, two.dict_id: two}.get)
        out = b"".join([piece async for piece in stream.adecompress(b"".join(frames))])
        await stream.afinish()
        return out

    assert asyncio.run(decode()) == b"".join(bodies)


def test_each_engine_loads_a_dictionary_once_for_many_jobs(tmp_path: Path, trained: bytes) -> None:
    dev = start_device(tmp_path / "root", "--engines", "2")
    try:
        with Runtime(dev.root, driver="zip", heap_size=64 << 20) as rt:
            d = rt.dictionary(trained)
            for _ in range(4):
                roundtrip(rt, d, events(60))
            loads = engine_loads(dev)
            # At most one CDict and one DDict per engine for 480 jobs, whichever engine ran them.
            assert 2 <= sum(loads) and all(n <= 2 for n in loads), loads
            roundtrip(rt, d, events(20), level=5)  # another level is another CDict
            assert sum(engine_loads(dev)) > sum(loads)
    finally:
        stop_process(dev.proc)


def test_a_dictionary_at_a_reused_address_is_loaded_afresh(runtime: Runtime, trained: bytes) -> None:
    other = train(len(trained), events(400, seed=9))
    first = runtime.dictionary(trained)
    address = first.address
    roundtrip(runtime, first, events(5))
    first.close()
    second = runtime.dictionary(other)
    assert second.address == address and second.dict_id != first.dict_id
    roundtrip(runtime, second, events(5))


def test_cpu_driver_makes_the_same_frames(runtime: Runtime, trained: bytes) -> None:
    bodies = events(20)
    on_device = roundtrip(runtime, runtime.dictionary(trained), bodies)
    with Runtime(driver="cpu", heap_size=64 << 20) as cpu:
        assert roundtrip(cpu, cpu.dictionary(trained), bodies) == on_device


def test_bad_dictionary_words_fail_the_job(runtime: Runtime, trained: bytes) -> None:
    d = runtime.dictionary(trained)
    empty = Dictionary(d.buffer, 0)
    with pytest.raises(JobFailed) as caught:
        runtime.compressor(3, dictionary=empty).compress(b"x" * 100)
    assert caught.value.status == abi.Status.BAD_LENGTH
    d.address = 0x1000  # no page of this process's heap
    with pytest.raises(JobFailed) as caught:
        runtime.compressor(3, dictionary=d).compress(b"x" * 100)
    assert caught.value.status == abi.Status.ADDR_FAULT


def test_bad_dictionary_words_fail_a_streams_first_bd(runtime: Runtime, trained: bytes) -> None:
    """A stream's first BD names its dictionary: the same words, the same statuses."""
    import asyncio

    d = runtime.dictionary(trained)

    async def first_bd(dictionary: Dictionary) -> None:
        async with runtime.compress_stream(3, dictionary=dictionary) as stream:
            await stream.acompress(b"x" * 100)

    with pytest.raises(JobFailed) as caught:
        asyncio.run(first_bd(Dictionary(d.buffer, 0)))
    assert caught.value.status == abi.Status.BAD_LENGTH
    d.address = 0x1000  # no page of this process's heap
    with pytest.raises(JobFailed) as caught:
        asyncio.run(first_bd(d))
    assert caught.value.status == abi.Status.ADDR_FAULT


def test_jobs_the_device_fails_are_rerun_on_the_cpu_with_their_dictionary(device: DeviceProc, runtime: Runtime,
                                                                          trained: bytes) -> None:
    assert device_cli(device.root, "inject", "hw-error", "--count", "3").returncode == 0
    d = runtime.dictionary(trained)
    bodies = events(12, seed=4)
    frames = roundtrip(runtime, d, bodies)
    assert runtime.fallback_jobs >= 3  # each error resets the controller: what was in flight re-runs too
    assert {zstandard.get_frame_parameters(f).dict_id for f in frames} == {d.dict_id}


async def stream_roundtrip(rt: Runtime, d: Dictionary, data: bytes, cuts: list[int]) -> tuple[bytes, bytes]:
    """``data`` through a compression stream with ``d``, then back through a decompression stream
    fed in pieces cut at ``cuts`` (the first ones inside the frame header)."""
    async with rt.compress_stream(3, dictionary=d) as up:
        frame = await up.acompress(data) + await up.afinish()
    down = rt.decompress_stream({d.dict_id: d}.get)
    bounds = [0, *cuts, len(frame)]
    out = [p for a, b in zip(bounds, bounds[1:], strict=False) async for p in down.adecompress(frame[a:b])]
    await down.afinish()
    return frame, b"".join(out)


def test_stream_sessions_and_split_jobs_carry_the_dictionary(device: DeviceProc, runtime: Runtime,
                                                             trained: bytes) -> None:
    """The dictionary a stream names goes with its first BD (the engine loads it into the stream's
    context), and a job over one BD keeps it in every BD: one frame that names it, on the device
    and on the cpu alike."""
    import asyncio

    data = b"".join(events(3000, seed=11)) * 4  # over 8 MiB: several stream BDs, and a split job below
    assert len(data) > abi.MAX_JOB_BYTES
    d = runtime.dictionary(trained)
    frame, back = asyncio.run(stream_roundtrip(runtime, d, data, [2, 4, 5, 9, 100_000]))
    assert back == data
    assert zstandard.get_frame_parameters(frame).dict_id == d.dict_id
    offline = zstandard.ZstdDecompressor(dict_data=zstandard.ZstdCompressionDict(trained))
    assert offline.decompressobj().decompress(frame) == data
    with Runtime(driver="cpu", heap_size=64 << 20) as cpu:
        assert asyncio.run(stream_roundtrip(cpu, cpu.dictionary(trained), data, [7777]))[0] == frame

    large = data
    with runtime.compressor(3, dictionary=d).compress(large) as result:
        split = bytes(result.view)
    assert zstandard.get_frame_parameters(split).dict_id == d.dict_id
    with runtime.decompressor(len(large), {d.dict_id: d}.get).decompress(split) as content:
        assert bytes(content.view) == large
    assert runtime.fallback_jobs == 0


def test_a_stream_frame_naming_an_unknown_dictionary_fails_before_any_bd(runtime: Runtime, trained: bytes) -> None:
    import asyncio

    frame = zstandard.ZstdCompressor(dict_data=zstandard.ZstdCompressionDict(trained)).compress(b"{}" * 100)

    async def main() -> None:
        stream = runtime.decompress_stream(lambda _id: None)
        async for _piece in stream.adecompress(frame):
            pass

    with pytest.raises(UnknownDictionary):
        asyncio.run(main())
    assert runtime.heap.statistics().in_use_bytes == 0
