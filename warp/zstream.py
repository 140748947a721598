"""One zstd stream's context, stepped one BD at a time: what an engine keeps for a stream session.

A stream session (UADK's ``wd_do_comp_strm``) sends its input as a sequence of BDs on one queue,
and the engine carries the compression state from one BD to the next, so the output is **one**
zstd frame however many BDs it took — not a frame per block. Each BD ends with everything given
so far flushed out (``ZSTD_e_flush``, ZIP's SYNC_FLUSH), and the last one, marked FINISH, ends
the frame (``ZSTD_e_end``). Decompression is the mirror: each BD consumes input until the
destination is full (``HZ_DECOMP_NO_SPACE``: send the rest again), the input is used up, or a frame
ends (``HZ_DECOMP_END``).

The device's engines and the ``cpu`` driver step the same :class:`StreamContext`, so a stream's
bytes do not depend on which ran it. Calls are native (``ZSTD_compressStream2`` /
``ZSTD_decompressStream`` on raw pointers); cffi releases the GIL for each.
"""

from __future__ import annotations

import threading
from typing import Any, Final, final

from warp import abi
from warp.codec import DST_TOO_SMALL, CodecError, Pointer, ffi, lib

_ERROR_BASE: Final = 1 << (8 * ffi.sizeof("size_t"))
#: Bytes all stream contexts may hold together by default (``--stream-memory``): one level-22
#: stream (~830 MiB), a dozen at level 19, hundreds at level 3.
DEFAULT_MEMORY: Final = 1 << 30
#: The largest window a decompression stream accepts (zstd's ``ZSTD_WINDOWLOG_LIMIT_DEFAULT``, 128 MiB).
WINDOW_LOG_LIMIT: Final = 27


@final
class StreamContext:
    """A compression or decompression stream in progress, and the bytes it has seen."""

    def __init__(self, direction: abi.QcType, level: int = 3, checksum: bool = False,
                 dictionary: tuple[Pointer, int] | None = None) -> None:
        """``dictionary``: a zstd dictionary's bytes (pointer, length), loaded (copied) into the
        context for the stream's frame(s), as the engine reads it at the stream's first BD."""
        self.direction = direction
        self.total_in = self.total_out = 0
        self._level = level
        self._dictionary_length = 0 if dictionary is None else dictionary[1]
        #: True between the BD that ended a frame and the next input (decompression).
        self.at_frame_end = direction is abi.QcType.DECOMPRESS
        if direction is abi.QcType.COMPRESS:
            self._zstd: Any = ffi.gc(lib.ZSTD_createCCtx(), lib.ZSTD_freeCCtx)
            _check(lib.ZSTD_CCtx_setParameter(self._zstd, lib.ZSTD_c_compressionLevel, level))
            _check(lib.ZSTD_CCtx_setParameter(self._zstd, lib.ZSTD_c_checksumFlag, int(checksum)))
            if dictionary is not None:
                _check(lib.ZSTD_CCtx_loadDictionary(self._zstd, *dictionary))
        else:
            self._zstd = ffi.gc(lib.ZSTD_createDCtx(), lib.ZSTD_freeDCtx)
            if dictionary is not None:
                _check(lib.ZSTD_DCtx_loadDictionary(self._zstd, *dictionary))
        self._in = ffi.new("ZSTD_inBuffer *")
        self._out = ffi.new("ZSTD_outBuffer *")

    def footprint(self, src: Pointer, size: int) -> int:
        """The memory this context may come to hold (:func:`footprint`); ``src[:size]`` is the
        start of a decompression's input."""
        return footprint(self.direction, self._level, self._dictionary_length, src, size)

    def step(self, dst: Pointer, capacity: int, src: Pointer, size: int, finish: bool) -> tuple[abi.Status, int, int]:
        """One BD: ``(status, consumed, produced)``, never an exception. Compression consumes all
        of ``src`` or fails (the destination must hold its flushed output); decompression may
        stop early. A failed step leaves the context unusable: the stream is over."""
        self._in.src, self._in.size, self._in.pos = src, size, 0
        self._out.dst, self._out.size, self._out.pos = dst, capacity, 0
        if self.direction is abi.QcType.COMPRESS:
            status = self._compress(finish)
        else:
            status = self._decompress()
        consumed, produced = int(self._in.pos), int(self._out.pos)
        self.total_in += consumed
        self.total_out += produced
        return status, consumed, produced

    def _compress(self, finish: bool) -> abi.Status:
        op = lib.ZSTD_e_end if finish else lib.ZSTD_e_flush
        while True:
            left = int(lib.ZSTD_compressStream2(self._zstd, self._out, self._in, op))
            if lib.ZSTD_isError(left):
                return abi.Status.DST_TOO_SMALL if _ERROR_BASE - left == DST_TOO_SMALL else abi.Status.HW_ERROR
            if left == 0:
                return abi.Status.OK
            if self._out.pos == self._out.size:
                return abi.Status.DST_TOO_SMALL  # ERR_DSTLEN_OUT: the flush did not fit

    def _decompress(self) -> abi.Status:
        while True:
            hint = int(lib.ZSTD_decompressStream(self._zstd, self._out, self._in))
            if lib.ZSTD_isError(hint):
                return abi.Status.CORRUPT_INPUT
            if hint == 0:
                self.at_frame_end = True
                return abi.Status.DECOMP_END
            if self._in.pos:
                self.at_frame_end = False
            if self._out.pos == self._out.size:
                return abi.Status.DECOMP_NO_SPACE
            if self._in.pos == self._in.size:
                return abi.Status.OK


def footprint(direction: abi.QcType, level: int, dictionary_length: int, src: Pointer = ffi.NULL,
              size: int = 0) -> int:
    """The memory a stream context may come to hold, by zstd's own estimates, before it holds any:
    a compression stream's by its level (~3.5 MiB at 3, ~90 MiB at 19, ~830 MiB at 22), a
    decompression stream's by the window the frame header at ``src`` declares (the largest zstd
    decodes if the header cannot be read), each with its dictionary's tables."""
    if direction is abi.QcType.COMPRESS:
        need = int(lib.ZSTD_estimateCStreamSize(level))
        return need + (int(lib.ZSTD_estimateCDictSize(dictionary_length, level)) if dictionary_length else 0)
    need = int(lib.ZSTD_estimateDStreamSize_fromFrame(src, size))
    if lib.ZSTD_isError(need):
        need = int(lib.ZSTD_estimateDStreamSize(1 << WINDOW_LOG_LIMIT))
    return need + (int(lib.ZSTD_estimateDDictSize(dictionary_length, 0)) if dictionary_length else 0)


def highest_level(limit: int, dictionary_length: int = 0) -> int | None:
    """The highest zstd level whose compression stream fits ``limit`` bytes alone, if any."""
    fitting = [level for level in range(abi.LEVEL_MIN, abi.LEVEL_MAX + 1)
               if footprint(abi.QcType.COMPRESS, level, dictionary_length) <= limit]
    return max(fitting, default=None)


@final
class ContextMemory:
    """What stream contexts may hold together, each charged its :meth:`StreamContext.footprint`
    when it is made: the device's ``--stream-memory``, and the same bound on the contexts the cpu
    driver keeps in this process. A context is over ``limit`` before it allocates, not after.
    Thread-safe: streams of one runtime may run on event loops in several threads."""

    def __init__(self, limit: int = DEFAULT_MEMORY) -> None:
        self.limit = limit
        self.charged = 0
        self._lock = threading.Lock()

    def take(self, need: int) -> bool:
        """Charge ``need`` bytes if they fit; False (nothing charged) if not."""
        with self._lock:
            if self.charged + need > self.limit:
                return False
            self.charged += need
            return True

    def give(self, charge: int) -> None:
        """A context that was charged ``charge`` is gone."""
        with self._lock:
            self.charged -= charge


def _check(result: int) -> None:
    if lib.ZSTD_isError(result):
        raise CodecError(result)
