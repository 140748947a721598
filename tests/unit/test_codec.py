"""The engines' zstd contexts (warp/codec.py) are bounded: a device that served every level
keeps at most CACHED_CONTEXTS of them, and none of an ultra level (issue 15, item 8: contexts
kept forever took a device to 3.1 GB RSS)."""

from __future__ import annotations

import zstandard

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
