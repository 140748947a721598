"""A request whose job outlives the runtime (the worker stopped and ``--shutdown-timeout`` ran
out while the request was still running) gets 503 ``shutting-down`` with ``Retry-After``, which a
load balancer retries elsewhere, rather than a 500 from the closed cpu pool."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestServer

from app.config import Config
from app.keys import RUNTIME
from app.server import create_app
from tests.harness.http import call, check_problem


def test_a_job_after_the_runtime_closed_is_503_shutting_down(tmp_path: Path) -> None:
    async def main() -> Any:
        app = create_app(Config(root=tmp_path / "root", device="none", access_log=False))
        async with TestServer(app, host="127.0.0.1") as server:
            app[RUNTIME].close()  # what the worker's cleanup does once --shutdown-timeout is over
            url = str(server.make_url("/")).rstrip("/")
            return await asyncio.get_running_loop().run_in_executor(None, call, url, "POST", "/compress",
                                                                     b"x" * 1000)

    reply = asyncio.run(main())
    doc = check_problem(reply, 503, tmp_path)
    assert doc["type"].endswith("shutting-down"), doc
    assert reply.headers["Retry-After"] == "1"
