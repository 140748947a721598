"""SIGTERM with a stream still uploading. aiohttp's own shutdown reads no byte more once it begins
(``RequestHandler.data_received`` drops data after ``close()``), so a stream could not finish; the
service's (``app.connection``) keeps reading the request in progress, so an upload that ends within
``--shutdown-timeout`` gets its whole answer, and one that does not is cut when the timeout runs out
— the client sees a failed transfer, never a truncated 200. The server exits 0 either way.
"""

from __future__ import annotations

import asyncio
import io
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import zstandard

from bench.streams import CUT, body_blocks, corpus_text
from tests.harness import start_server
from warp.device.launch import stop_process

pytestmark = pytest.mark.e2e

MIB = 1 << 20
SHUTDOWN_TIMEOUT = 3.0


async def _upload(url: str, body: bytes, seconds: float, signal_after: float, stop: asyncio.Event) -> bytes:
    """Send ``body`` over ``seconds`` in 64 KiB pieces; set ``stop`` once ``signal_after`` passed."""
    step = 64 << 10
    pieces = [body[i:i + step] for i in range(0, len(body), step)]
    started = time.monotonic()

    async def gen() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece
            await asyncio.sleep(seconds / len(pieces))
            if time.monotonic() - started > signal_after:
                stop.set()

    out = io.BytesIO()
    async with aiohttp.ClientSession() as session, session.post(url, data=gen()) as response:
        assert response.status == 200
        async for chunk in response.content.iter_any():
            out.write(chunk)
    return out.getvalue()


def _sigterm_mid_upload(tmp_path: Path, body: bytes, seconds: float, signal_after: float,
                        shutdown_timeout: float) -> tuple[bytes | BaseException, float]:
    """Upload ``body`` over ``seconds``, SIGTERM the server ``signal_after`` into it: the outcome
    and how long the server took to exit after the signal (it must exit 0)."""
    srv = start_server(tmp_path / "root", tmp_path / "server.log", "--workers", "1", "--stream-above", "1M",
                       "--shutdown-timeout", str(shutdown_timeout))

    async def upload_and_stop() -> tuple[bytes | BaseException, float]:
        stop = asyncio.Event()
        run = asyncio.gather(_upload(f"{srv.url}/compress", body, seconds, signal_after, stop),
                             return_exceptions=True)
        await stop.wait()
        srv.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        (outcome,) = await run
        return outcome, signalled

    try:
        outcome, signalled = asyncio.run(upload_and_stop())
        assert srv.proc.wait(3 * shutdown_timeout) == 0
        return outcome, time.monotonic() - signalled
    finally:
        stop_process(srv.proc)


def test_sigterm_lets_a_stream_still_uploading_finish(tmp_path: Path, corpus: dict[str, Path]) -> None:
    body = b"".join(body_blocks(corpus_text(corpus), 6 * MIB))
    outcome, _exit_after = _sigterm_mid_upload(tmp_path, body, seconds=4.0, signal_after=1.0, shutdown_timeout=10.0)
    assert isinstance(outcome, bytes), outcome
    assert zstandard.ZstdDecompressor().decompressobj().decompress(outcome) == body


def test_sigterm_cuts_a_stream_that_outlasts_the_shutdown_timeout(tmp_path: Path, corpus: dict[str, Path]) -> None:
    body = b"".join(body_blocks(corpus_text(corpus), 6 * MIB))
    outcome, exit_after = _sigterm_mid_upload(tmp_path, body, seconds=4 * SHUTDOWN_TIMEOUT, signal_after=3.0,
                                              shutdown_timeout=SHUTDOWN_TIMEOUT)
    assert isinstance(outcome, CUT), outcome
    assert exit_after < 3 * SHUTDOWN_TIMEOUT
