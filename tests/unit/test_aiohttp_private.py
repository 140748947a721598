"""Each private aiohttp name the service uses (app/aiohttp_private.py, app/connection.py) still
exists in the installed aiohttp with the shape relied on: an upgrade that moves one fails here, by
name, instead of in production."""

from __future__ import annotations

import asyncio
import collections
import inspect
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.web_protocol import _ErrInfo

from app import aiohttp_private


@pytest.fixture
def handler() -> Iterator[web.RequestHandler]:
    """A real RequestHandler, as aiohttp's server makes one per connection."""
    loop = asyncio.new_event_loop()

    async def make() -> web.RequestHandler:
        async def handle(request: web.BaseRequest) -> web.StreamResponse:
            return web.Response()
        return web.Server(handle)()

    try:
        yield loop.run_until_complete(make())
    finally:
        loop.close()


def test_the_installed_aiohttp_is_a_tested_minor_version() -> None:
    major, minor = (int(part) for part in aiohttp.__version__.split(".")[:2])
    assert (major, minor) in aiohttp_private.TESTED, (
        f"aiohttp {aiohttp.__version__} is not one of {aiohttp_private.TESTED}: check every name in "
        "app/aiohttp_private.py against it, then add it there and to pyproject.toml's pin")


def test_pyproject_pins_the_tested_minors() -> None:
    text = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    low, high = aiohttp_private.TESTED[0], aiohttp_private.TESTED[-1]
    assert f'"aiohttp>={low[0]}.{low[1]},<{high[0]}.{high[1] + 1}"' in text


def test_err_info_takes_status_exc_message() -> None:
    info = _ErrInfo(status=408, exc=ValueError("x"), message="late")
    assert (info.status, info.message) == (408, "late")


def test_request_handler_queues_messages_and_sleeps_on_a_waiter(handler: web.RequestHandler) -> None:
    assert isinstance(handler._messages, collections.deque)
    assert handler._waiter is None  # no connection yet: nothing waits
    assert handler._request_count == 0
    assert aiohttp_private.requests_parsed(handler) == 0
    assert not aiohttp_private.awaiting_request(handler)


def test_queue_error_puts_an_error_where_start_reads_it_and_wakes_it(handler: web.RequestHandler) -> None:
    loop = asyncio.new_event_loop()
    try:
        handler._waiter = loop.create_future()
        assert aiohttp_private.awaiting_request(handler)
        problem = ValueError("late")
        aiohttp_private.queue_error(handler, 408, problem, "late")
        assert handler._waiter.done()
        (info, payload), = handler._messages
        assert isinstance(info, _ErrInfo) and info.status == 408 and info.exc is problem
        assert payload is aiohttp.streams.EMPTY_PAYLOAD
    finally:
        loop.close()


def test_start_answers_queued_errors_through_handle_error() -> None:
    """The path queue_error relies on: RequestHandler.start takes ``_ErrInfo`` off ``_messages``
    and answers it with ``_make_error_handler``, which calls ``handle_error`` with its status,
    exception and message. (tests/http/test_http_head.py shows the 408 and 503 on the wire.)"""
    start = inspect.getsource(web.RequestHandler.start)
    assert "self._messages.popleft()" in start and "isinstance(message, _ErrInfo)" in start
    assert "self._make_error_handler(message)" in start
    assert "self.handle_error(" in inspect.getsource(web.RequestHandler._make_error_handler)


def test_app_runner_builds_its_server_in_make_server() -> None:
    """app.connection.Runner overrides ``_make_server`` to install its own web.Server."""
    assert inspect.iscoroutinefunction(web.AppRunner._make_server)


def test_request_in_progress_and_its_waiter_are_the_ones_shutdown_uses(handler: web.RequestHandler) -> None:
    """app.connection's shutdown waits for the request in progress through the same names aiohttp's
    ``shutdown`` uses, and ``_handle_request`` resolves that waiter when the request is answered."""
    assert not aiohttp_private.request_in_progress(handler)
    handler._request_in_progress = True
    assert aiohttp_private.request_in_progress(handler)
    shutdown = inspect.getsource(web.RequestHandler.shutdown)
    assert "self._request_in_progress" in shutdown and "self._handler_waiter" in shutdown
    handle = inspect.getsource(web.RequestHandler._handle_request)
    assert "self._handler_waiter.set_result(None)" in handle and "self._request_in_progress = False" in handle
    loop = asyncio.new_event_loop()
    try:
        async def waiter() -> None:
            done = aiohttp_private.handler_done(handler)
            assert handler._handler_waiter is done and not done.done()
        loop.run_until_complete(waiter())
    finally:
        loop.close()


def test_close_makes_data_received_drop_bytes_so_pre_shutdown_spares_busy_connections() -> None:
    """Why app.connection.Server.pre_shutdown does not call aiohttp's: ``Server.pre_shutdown``
    closes every connection, and a closed one drops what arrives."""
    assert "conn.close()" in inspect.getsource(web.Server.pre_shutdown)
    received = inspect.getsource(web.RequestHandler.data_received)
    assert "if self._force_close or self._close:" in received
    assert "self._connections" in inspect.getsource(web.Server.shutdown)
