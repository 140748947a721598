"""SIGTERM with a stream still uploading: aiohttp reads no byte more once the server stops
(``RequestHandler.data_received`` drops data after ``close()``), so the stream cannot finish; when
``--shutdown-timeout`` runs out it is cut — the client sees a failed transfer, never a truncated
200 — and the server exits 0."""

from __future__ import annotations

import asyncio
import io
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

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


def test_sigterm_cuts_a_stream_still_uploading(tmp_path: Path, corpus: dict[str, Path]) -> None:
    srv = start_server(tmp_path / "root", tmp_path / "server.log", "--workers", "1", "--stream-above", "1M",
                       "--shutdown-timeout", str(SHUTDOWN_TIMEOUT))
    body = b"".join(body_blocks(corpus_text(corpus), 6 * MIB))

    async def upload_and_stop() -> bytes | BaseException:
        stop = asyncio.Event()
        run = asyncio.gather(_upload(f"{srv.url}/compress", body, 4 * SHUTDOWN_TIMEOUT, 3.0, stop),
                             return_exceptions=True)
        await stop.wait()
        srv.proc.send_signal(signal.SIGTERM)
        (outcome,) = await run
        return outcome

    try:
        started = time.monotonic()
        outcome = asyncio.run(upload_and_stop())
        assert srv.proc.wait(3 * SHUTDOWN_TIMEOUT) == 0
        assert time.monotonic() - started < 3 + 3 * SHUTDOWN_TIMEOUT
    finally:
        stop_process(srv.proc)
    assert isinstance(outcome, CUT), outcome
