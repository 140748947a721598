"""The device killed under a stream: a stream cannot move to the cpu mid-frame, so the client must
see a failed transfer (the response cut before its last chunk), never a truncated 200; the
service counts the cut and serves the next stream."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from bench.streams import CUT, body_blocks, corpus_text, post_stream
from tests.harness import start_server, wait_until
from tests.harness.metrics import metric
from warp.device.launch import stop_process

pytestmark = pytest.mark.e2e

MIB = 1 << 20


def device_pid(root: Path) -> int:
    """The device process: the one holding the runtime root's char device's lock file open is
    hard to find portably, so match its command line as tests/e2e/test_device_restart.py does."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"warp.device" in argv and str(root).encode() in argv:
                return int(entry.name)
    raise AssertionError(f"no device under {root}")


def test_device_lost_mid_stream_cuts_the_response(tmp_path: Path, corpus: dict[str, Path]) -> None:
    root = tmp_path / "root"
    srv = start_server(root, tmp_path / "server.log", "--workers", "1", "--job-timeout", "5")
    material = corpus_text(corpus)
    try:
        def killing(blocks: Iterator[bytes]) -> Iterator[bytes]:
            for i, block in enumerate(blocks):
                if i == 8:  # the response head went out with the first block's output
                    time.sleep(0.5)
                    os.kill(device_pid(root), signal.SIGKILL)
                yield block

        with pytest.raises(CUT):
            asyncio.run(post_stream(srv.url + "/compress", killing(body_blocks(material, 64 * MIB)), io.BytesIO(),
                                    64 * MIB))
        wait_until(lambda: metric(srv.url, "warpzip_streams_total", direction="compress", outcome="cut") == 1, 30,
                   "the cut stream counted", srv.log)
        out = io.BytesIO()
        body = b"".join(body_blocks(material, 8 * MIB))
        assert asyncio.run(post_stream(srv.url + "/compress", iter([body]), out, len(body)))[0] == 200
        assert zstandard.ZstdDecompressor().decompressobj().decompress(out.getvalue()) == body
    finally:
        stop_process(srv.proc)
