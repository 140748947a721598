"""``python -m bench.streams``: streaming MB/s of /compress and /decompress (issue 19), and the pieces
the stream tests share: bodies generated block by block, never whole in memory, posted with aiohttp
while the response is read; the peak RSS of each process of a server's tree while that happens
(worker, parent, device), from /proc.

The bench starts warpzip with its defaults, sends one ``--size`` body through /compress (a
Content-Length over ``--stream-above``, so it streams) and the frame back through /decompress, checks
the round trip by digest, and prints MiB/s per direction (body bytes over the request's wall time,
upload, device and download overlapped) with each process's RSS growth.

A streamed body is compressible and not periodic: 1 MiB windows of the Silesia files at offsets
that walk through them, each prefixed with its index, so a body of gigabytes compresses about as
the corpus does and a decoder that lost or repeated a block gives a different digest.
"""

from __future__ import annotations

import argparse
import asyncio
import bz2
import hashlib
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Protocol

import aiohttp

from bench import proctree
from bench.server import SERVERS, RunningServer
from bench.soak import role
from warp.tool.corpus import CORPUS_DIR
from warp.tool.units import parse_size

BLOCK = 1 << 20
CUT = (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError)
"""What :func:`post_stream` raises for a cut response: the body cut short or, while the upload goes
on, the connection closed under it."""


class Writer(Protocol):
    def write(self, data: bytes, /) -> object: ...


class Digest:
    """A :class:`Writer` that keeps only the SHA-256 and length of what it is given."""

    def __init__(self) -> None:
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return len(data)

    def hexdigest(self) -> str:
        return self.sha.hexdigest()


def corpus_text(files: dict[str, Path]) -> bytes:
    """The four corpus files joined: the material :func:`body_blocks` cuts from."""
    return b"".join(path.read_bytes() for _, path in sorted(files.items()))


def body_blocks(material: bytes, total: int) -> Iterator[bytes]:
    """``total`` bytes of body in blocks of :data:`BLOCK` (the last one shorter)."""
    span = len(material) - BLOCK
    index = 0
    sent = 0
    while sent < total:
        start = (index * 7_919_123) % span
        block = index.to_bytes(8, "little") + material[start:start + BLOCK - 8]
        block = block[:total - sent]
        sent += len(block)
        index += 1
        yield block


def teed(blocks: Iterator[bytes], copy: Writer) -> Iterator[bytes]:
    """``blocks``, each also written to ``copy`` (a body's digest taken as it is uploaded)."""
    for block in blocks:
        copy.write(block)
        yield block


def file_blocks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as source:
        while block := source.read(BLOCK):
            yield block


async def post_stream(url: str, blocks: Iterator[bytes], out: Writer, length: int | None = None,
                      timeout: float = 600) -> tuple[int, dict[str, str]]:
    """POST ``blocks`` (chunked, or with ``length`` as its Content-Length) and write the response body
    to ``out`` as it arrives; returns the status and headers. A cut response raises one of :data:`CUT`."""
    async def upload() -> AsyncIterator[bytes]:
        for block in blocks:
            yield block

    headers = {} if length is None else {"Content-Length": str(length)}
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(timeout=client_timeout) as session, \
            session.post(url, data=upload(), headers=headers) as response:
        async for piece in response.content.iter_chunked(BLOCK):
            out.write(piece)
        return response.status, dict(response.headers)


class RssPeaks:
    """Peak RSS of every process in a server's tree, sampled by a thread while a stream runs."""

    def __init__(self, server_pid: int, interval_s: float = 0.05) -> None:
        self._pid = server_pid
        self._interval_s = interval_s
        self._stop = threading.Event()
        self.baseline = self._sample()
        self.peak = dict(self.baseline)
        self._thread = threading.Thread(target=self._loop, name="rss-peaks", daemon=True)

    def __enter__(self) -> RssPeaks:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> dict[str, int]:
        """RSS by role (``server``, ``worker``, ``device``; the largest of a role)."""
        rss: dict[str, int] = {}
        for stat in proctree.snapshot_tree(self._pid):
            name = role(stat, self._pid)
            rss[name] = max(rss.get(name, 0), stat.rss_bytes)
        return rss

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            for name, value in self._sample().items():
                self.peak[name] = max(self.peak.get(name, 0), value)

    def growth(self) -> dict[str, int]:
        """Peak minus baseline, per role."""
        return {name: value - self.baseline.get(name, 0) for name, value in self.peak.items()}


def _timed(url: str, blocks: Iterator[bytes], out: Writer, length: int, pid: int) -> tuple[float, dict[str, int]]:
    """Seconds one streamed request took, and each process's RSS growth meanwhile."""
    started = time.monotonic()
    with RssPeaks(pid) as peaks:
        status, _ = asyncio.run(post_stream(url, blocks, out, length))
    if status != 200:
        raise RuntimeError(f"{url} answered {status}")
    return time.monotonic() - started, peaks.growth()


def run(size: int, level: int, scratch: Path) -> list[str]:
    """One round trip of ``size`` bytes; the report's lines."""
    material = b"".join(bz2.decompress(path.read_bytes()) for path in sorted(CORPUS_DIR.glob("*.bz2")))
    frame = scratch / "body.zst"
    sent, back = Digest(), Digest()
    with RunningServer(SERVERS["warpzip"], scratch) as server:
        server.wait_ready()
        base = f"http://127.0.0.1:{server.port}"
        with frame.open("wb") as out:
            up_s, up_rss = _timed(f"{base}/compress?level={level}", teed(body_blocks(material, size), sent), out, size,
                                  server.process.pid)
        down_s, down_rss = _timed(f"{base}/decompress", file_blocks(frame), back, frame.stat().st_size,
                                  server.process.pid)
    if back.hexdigest() != sent.hexdigest() or back.size != size:
        raise RuntimeError("the round trip changed the body")
    mib = size / (1 << 20)
    return [f"stream {mib:.0f} MiB at level {level}: frame {frame.stat().st_size / (1 << 20):.0f} MiB "
            f"(ratio {size / frame.stat().st_size:.2f}), round trip identical",
            f"compress   {mib / up_s:7.1f} MiB/s  ({up_s:.1f} s)  RSS growth MiB: {_mib(up_rss)}",
            f"decompress {mib / down_s:7.1f} MiB/s  ({down_s:.1f} s)  RSS growth MiB: {_mib(down_rss)}"]


def _mib(growth: dict[str, int]) -> str:
    return ", ".join(f"{name} {value / (1 << 20):+.1f}" for name, value in sorted(growth.items()))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.streams", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("512M"), help="body size (512M, 2G ...)")
    parser.add_argument("--level", type=int, default=3, help="zstd level")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="warpzip-streams-") as scratch:
        print("\n".join(run(args.size, args.level, Path(scratch))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
