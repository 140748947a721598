"""Native zstd through python-zstandard's cffi backend, writing straight into caller memory.

``ZstdCompressor.compress`` returns a new ``bytes``; the device must instead compress from the
source pages into the destination pages it was given, so this module calls ``ZSTD_compress2`` /
``ZSTD_decompressDCtx`` on raw pointers. cffi releases the GIL for the duration of each call, so
engines run in parallel with the process's other threads. Contexts are reused (one compression
context per level, as the zstd manual advises), so a :class:`Codec` belongs to one thread.
"""

from __future__ import annotations

from typing import Any, Final, final

import zstandard.backend_cffi as _backend

from warp import abi

ffi: Any = _backend.ffi  # type: ignore[attr-defined]  # the cffi module has no type information
lib: Any = _backend.lib  # type: ignore[attr-defined]

Pointer = Any  # a cffi ``char *``; cffi has no static types

_ERROR_BASE: Final = 1 << (8 * ffi.sizeof("size_t"))
DST_TOO_SMALL: Final = int(lib.ZSTD_error_dstSize_tooSmall)
#: Largest result that is a size: ``ZSTD_isError(r)`` is ``r > (size_t)-ZSTD_error_maxCode``,
#: tested here in Python because a cffi call costs more than the comparison (~0.15 us a job).
_LAST_SIZE: Final = _ERROR_BASE - int(lib.ZSTD_error_maxCode)
_COMPRESS: Final = abi.QcType.COMPRESS


class CodecError(Exception):
    """zstd returned an error code; ``code`` is the ZSTD_ErrorCode value."""

    def __init__(self, result: int) -> None:
        self.code = _ERROR_BASE - result
        super().__init__(ffi.string(lib.ZSTD_getErrorName(result)).decode())


def pointer(buffer: Any) -> Pointer:
    """A ``char[]`` over a writable buffer (mmap, bytearray); ``ptr + offset`` addresses into it.

    It holds a buffer export, so the mmap cannot be closed under a running engine; call
    :func:`release` first.
    """
    return ffi.from_buffer(buffer, require_writable=True)


def release(ptr: Pointer) -> None:
    ffi.release(ptr)


def compress_bound(size: int) -> int:
    return int(lib.ZSTD_compressBound(size))


def decompressed_size(data: Any) -> int | None:
    """Total content size declared by every frame in ``data``; ``None`` if unknown or not zstd."""
    size = int(lib.ZSTD_findDecompressedSize(ffi.from_buffer(data), len(data)))
    if size in (int(lib.ZSTD_CONTENTSIZE_UNKNOWN), int(lib.ZSTD_CONTENTSIZE_ERROR)):
        return None
    return size


#: Compression contexts one codec keeps (distinct level/checksum pairs; a service uses one or two).
CACHED_CONTEXTS: Final = 4
#: Levels whose contexts are never kept: zstd's "ultra" levels, with windows up to 128 MiB.
UNCACHED_FROM: Final = 20


@final
class Codec:
    """Reusable zstd contexts for one thread."""

    def __init__(self) -> None:
        self._cctx: dict[tuple[int, bool], Any] = {}
        self._dctx = ffi.gc(lib.ZSTD_createDCtx(), lib.ZSTD_freeDCtx)

    def compress(self, dst: Pointer, capacity: int, src: Pointer, size: int, level: int, checksum: bool) -> int:
        """One frame with the content size in its header; returns the bytes written to ``dst``."""
        return _checked(self._zstd(_COMPRESS, dst, capacity, src, size, level, checksum))

    def decompress(self, dst: Pointer, capacity: int, src: Pointer, size: int) -> int:
        """All frames in ``src`` into ``dst``; fails with dstSize_tooSmall rather than overrun."""
        return _checked(self._zstd(abi.QcType.DECOMPRESS, dst, capacity, src, size, 0, False))

    def run(self, direction: abi.QcType, dst: Pointer, capacity: int, src: Pointer, size: int,
            level: int, checksum: bool, loaded: Any = None) -> tuple[abi.Status, int]:
        """Execute one job as an engine does: ``(status, produced)``, never an exception. ``loaded``
        is a dictionary from :func:`load_dictionary` (a CDict to compress, a DDict to decompress)."""
        return _status(self._zstd(direction, dst, capacity, src, size, level, checksum, loaded))

    def _zstd(self, direction: abi.QcType, dst: Pointer, capacity: int, src: Pointer, size: int,
              level: int, checksum: bool, loaded: Any = None) -> Any:
        """The one C call of a job: its raw ``size_t`` result (a size, or an error code)."""
        if direction is _COMPRESS:
            cctx = self._cctx.get((level, checksum)) or self._context(level, checksum)
            if loaded is not None:
                return _with_cdict(cctx, loaded, dst, capacity, src, size)
            return lib.ZSTD_compress2(cctx, dst, capacity, src, size)
        if loaded is not None:
            return lib.ZSTD_decompress_usingDDict(self._dctx, dst, capacity, src, size, loaded)
        return lib.ZSTD_decompressDCtx(self._dctx, dst, capacity, src, size)

    @property
    def cached(self) -> tuple[tuple[int, bool], ...]:
        """The (level, checksum) pairs whose contexts are kept, oldest first."""
        return tuple(self._cctx)

    def _context(self, level: int, checksum: bool) -> Any:
        """A context for these parameters, kept for the next job unless the level is an ultra one.

        A context keeps the memory its largest job needed: at levels 20-22 that is hundreds of
        MiB for a large input (nine 64 MiB jobs took a device to 3.1 GB RSS for good), so those
        are freed as soon as the job ends, and at most ``CACHED_CONTEXTS`` others are kept."""
        key = (level, checksum)
        cctx = self._cctx.get(key)
        if cctx is None:
            cctx = ffi.gc(lib.ZSTD_createCCtx(), lib.ZSTD_freeCCtx)
            _check(lib.ZSTD_CCtx_setParameter(cctx, lib.ZSTD_c_compressionLevel, level))
            _check(lib.ZSTD_CCtx_setParameter(cctx, lib.ZSTD_c_checksumFlag, int(checksum)))
            if level < UNCACHED_FROM:
                if len(self._cctx) >= CACHED_CONTEXTS:
                    del self._cctx[next(iter(self._cctx))]  # the oldest: freed with its last reference
                self._cctx[key] = cctx
        return cctx


def load_dictionary(data: Any, direction: abi.QcType, level: int) -> Any:
    """A zstd dictionary digested once for many jobs: a ``ZSTD_CDict`` at ``level`` to compress, a
    ``ZSTD_DDict`` to decompress (zstd copies ``data``). Freed with its last reference."""
    source = ffi.from_buffer(data)
    if direction is _COMPRESS:
        loaded = ffi.gc(lib.ZSTD_createCDict(source, len(data), level), lib.ZSTD_freeCDict)
    else:
        loaded = ffi.gc(lib.ZSTD_createDDict(source, len(data)), lib.ZSTD_freeDDict)
    if loaded == ffi.NULL:
        raise MemoryError("zstd could not load the dictionary")
    return loaded


def dictionary_id(data: Any) -> int:
    """The id a zstd dictionary declares (0 for raw content, which frames cannot name)."""
    return int(lib.ZSTD_getDictID_fromDict(ffi.from_buffer(data), len(data)))


#: The longest zstd frame header (``ZSTD_FRAMEHEADERSIZE_MAX``).
FRAME_HEADER_MAX: Final = 18


def header_incomplete(data: Any) -> bool:
    """Whether ``data`` is the start of a zstd frame header cut short: more bytes are needed before
    the frame (its dictionary id) can be read. Anything else — a whole header, not zstd — is False."""
    if len(data) >= FRAME_HEADER_MAX:
        return False
    result = int(lib.ZSTD_frameHeaderSize(ffi.from_buffer(data), len(data)))  # needs the first 5 bytes
    if result > _LAST_SIZE:
        return bool(_ERROR_BASE - result == int(lib.ZSTD_error_srcSize_wrong))
    return len(data) < result


def frame_dictionary_id(data: Any) -> int:
    """The dictionary id the first frame of ``data`` names; 0 if none (or not a frame)."""
    return int(lib.ZSTD_getDictID_fromFrame(ffi.from_buffer(data), len(data)))


def dictionary_ids(data: Any) -> tuple[int, ...]:
    """The distinct dictionary ids the frames of ``data`` name, in order (frames naming none, and
    skippable frames, left out). The walk stops at the first bytes that are not a whole frame: the
    decoder says what is wrong with them. One frame, the common case, costs two native calls."""
    ptr, size = ffi.from_buffer(data), len(data)
    first = int(lib.ZSTD_findFrameCompressedSize(ptr, size))
    if first >= size:  # one frame, or an error code (a huge size_t): the first frame's header decides
        named = int(lib.ZSTD_getDictID_fromFrame(ptr, size))
        return (named,) if named else ()
    ids: list[int] = []
    at = 0
    while at < size:
        length = int(lib.ZSTD_findFrameCompressedSize(ptr + at, size - at))
        if length > size - at:  # an error code, or a frame cut short
            break
        named = int(lib.ZSTD_getDictID_fromFrame(ptr + at, size - at))
        if named and named not in ids:
            ids.append(named)
        at += length
    return tuple(ids)


def _with_cdict(cctx: Any, cdict: Any, dst: Pointer, capacity: int, src: Pointer, size: int) -> Any:
    """``ZSTD_compress2`` with ``cdict`` referenced for this job only: its level supersedes the
    context's, the checksum flag stays the context's, and the next job sees no dictionary."""
    _checked(lib.ZSTD_CCtx_refCDict(cctx, cdict))
    try:
        return lib.ZSTD_compress2(cctx, dst, capacity, src, size)
    finally:
        lib.ZSTD_CCtx_refCDict(cctx, ffi.NULL)


def _status(result: int) -> tuple[abi.Status, int]:
    if result <= _LAST_SIZE:
        return abi.Status.OK, result
    return (abi.Status.DST_TOO_SMALL if _ERROR_BASE - result == DST_TOO_SMALL else abi.Status.CORRUPT_INPUT), 0


def _checked(result: int) -> int:
    if result > _LAST_SIZE:
        raise CodecError(result)
    return result


def _check(result: int) -> None:
    if lib.ZSTD_isError(result):
        raise CodecError(result)
