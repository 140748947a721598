"""The engines' zstd contexts (warp/codec.py) are bounded: a device that served every level
keeps at most CACHED_CONTEXTS of them, and none of an ultra level (issue 15, item 8: contexts
kept forever took a device to 3.1 GB RSS)."""

from __future__ import annotations

import zstandard

from bench.events import events
from warp import abi, codec


def compress_at(c: codec.Codec, data: bytes, level: int, checksum: bool = False) -> bytes:
    src = bytearray(data)
    dst = bytearray(codec.compress_bound(len(data)))
    status, produced = c.run(abi.QcType.COMPRESS, codec.pointer(dst), len(dst), codec.pointer(src), len(src),
                             level, checksum)
    assert status == abi.Status.OK
    return bytes(dst[:produced])


def test_contexts_are_bounded_and_ultra_levels_are_not_kept() -> None:
    c = codec.Codec()
    data = b"bounded contexts " * 500
    for level in range(abi.LEVEL_MIN, abi.LEVEL_MAX + 1):
        for checksum in (False, True):
            assert zstandard.decompress(compress_at(c, data, level, checksum)) == data
            assert len(c.cached) <= codec.CACHED_CONTEXTS
    assert all(level < codec.UNCACHED_FROM for level, _ in c.cached)
    compress_at(c, data, 3)
    compress_at(c, data, 3)
    assert c.cached.count((3, False)) == 1


def test_dictionary_ids_walks_every_frame() -> None:
    """The ids a body's frames name, in order and once each; plain and skippable frames name none,
    and the walk stops at bytes that are not a whole frame (the decoder reports those)."""
    one, two = (zstandard.train_dictionary(8 << 10, list[bytes | bytearray | memoryview](events(300, seed=k)))
                for k in (1, 2))
    assert one.dict_id() != two.dict_id()

    def framed(d: zstandard.ZstdCompressionDict | None) -> bytes:
        return zstandard.ZstdCompressor(dict_data=d).compress(b"payload " * 20)

    skippable = (0x184D2A50).to_bytes(4, "little") + (2).to_bytes(4, "little") + b"ok"
    a, b, plain = framed(one), framed(two), framed(None)
    assert codec.dictionary_ids(plain) == () and codec.dictionary_ids(a) == (one.dict_id(),)
    assert codec.dictionary_ids(plain + skippable + a + a) == (one.dict_id(),)
    assert codec.dictionary_ids(b + plain + a + b) == (two.dict_id(), one.dict_id())
    assert codec.dictionary_ids(a + b[:-3]) == (one.dict_id(),)  # the cut second frame is not walked
    assert codec.dictionary_ids(b"not a frame at all") == ()
