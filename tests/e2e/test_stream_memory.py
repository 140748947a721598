"""A large body through ``/compress`` and back through ``/decompress`` in bounded memory (issue 19).

The body is generated block by block and never held whole, here or in the server: its digest is
taken as it is uploaded, the frame goes to a file, and ``zstd`` checks that the file is one frame
that decodes to the same digest; then the file streams through ``/decompress`` and its output's
digest is compared. Meanwhile the RSS of each process of the server's tree (the parent, the
workers, the device) is sampled from /proc: its growth must stay under :data:`RSS_BOUND`, a fixed
figure however large the body (the suite's 256 MiB; ``make stream-soak`` runs 2 GiB).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.streams import Digest, RssPeaks, body_blocks, corpus_text, file_blocks, post_stream, teed
from tests.harness import ServerProc, require_tool, start_server
from warp.device.launch import stop_process

MIB = 1 << 20
SIZE = int(os.environ.get("WARPZIP_STREAM_BYTES", str(256 * MIB)))
"""Body bytes; ``make stream-soak`` sets 2 GiB."""
RSS_BOUND = 96 * MIB
"""Most any process may grow while the body streams: the read-ahead window, the blocks on the
device and their output, socket buffers, allocator slack. A body held whole would be ``SIZE``."""


@pytest.fixture
def streaming(tmp_path: Path) -> Iterator[ServerProc]:
    srv = start_server(tmp_path / "root", tmp_path / "server.log", "--workers", "2", "--access-log", "0")
    yield srv
    stop_process(srv.proc)


def test_large_body_round_trip_in_bounded_memory(streaming: ServerProc, corpus: dict[str, Path],
                                                 tmp_path: Path) -> None:
    zstd = require_tool("zstd")
    material = corpus_text(corpus)
    sent = Digest()
    frame = tmp_path / "body.zst"
    started = time.monotonic()
    with RssPeaks(streaming.proc.pid) as compressing, frame.open("wb") as out:
        status, headers = asyncio.run(post_stream(streaming.url + "/compress", teed(body_blocks(material, SIZE), sent),
                                                  out, SIZE))
    compress_s = time.monotonic() - started
    assert status == 200 and headers.get("Transfer-Encoding") == "chunked"
    assert sent.size == SIZE

    listing = subprocess.run([zstd, "-lv", str(frame)], capture_output=True, text=True, timeout=600, check=True)
    assert "Zstandard Frames: 1" in listing.stdout, listing.stdout
    decoded = hashlib.sha256()
    with subprocess.Popen([zstd, "-d", "-c", str(frame)], stdout=subprocess.PIPE) as unzstd:
        assert unzstd.stdout is not None
        while block := unzstd.stdout.read(MIB):
            decoded.update(block)
    assert unzstd.returncode == 0 and decoded.hexdigest() == sent.hexdigest()

    back = Digest()
    started = time.monotonic()
    with RssPeaks(streaming.proc.pid) as decompressing:
        status, headers = asyncio.run(post_stream(streaming.url + "/decompress", file_blocks(frame), back,
                                                  frame.stat().st_size))
    decompress_s = time.monotonic() - started
    assert status == 200 and headers.get("Transfer-Encoding") == "chunked"
    assert back.size == SIZE and back.hexdigest() == sent.hexdigest()

    print(f"\n{SIZE / MIB:.0f} MiB: compress {SIZE / MIB / compress_s:.0f} MiB/s to {frame.stat().st_size / MIB:.0f} "
          f"MiB, decompress {SIZE / MIB / decompress_s:.0f} MiB/s")
    for name, peaks in (("compress", compressing), ("decompress", decompressing)):
        print(f"{name}: RSS baseline {peaks.baseline}, growth {peaks.growth()}")
        assert {"server", "worker", "device"} <= peaks.peak.keys(), peaks.peak
        for process, grown in peaks.growth().items():
            assert grown < RSS_BOUND, f"{name}: the {process} grew {grown / MIB:.0f} MiB, body {SIZE / MIB:.0f} MiB"
