"""Every reach into aiohttp's private names, in one place, each with the reason it is needed.

The service hooks aiohttp where it has no public extension point (issue 18): a protocol that
answers a 408 or 503 through the same queue the parser's own errors take, and a runner that builds
our server. These names are not aiohttp's API, so pyproject.toml pins aiohttp to the minor
versions tested (:data:`TESTED`), and tests/unit/test_aiohttp_private.py checks each name here
against the installed aiohttp, so an upgrade that moves one fails there, by name, not in
production.
"""

from __future__ import annotations

import asyncio
from typing import Final

from aiohttp import web
from aiohttp.streams import EMPTY_PAYLOAD
from aiohttp.web_protocol import _ErrInfo

TESTED: Final = ((3, 14),)
"""aiohttp minor versions this module was checked against (keep pyproject.toml's pin in step)."""


def queue_error(handler: web.RequestHandler, status: int, exc: BaseException, message: str) -> None:
    """Answer the next request slot of ``handler`` with an error, as aiohttp does a parser error:
    ``RequestHandler.start`` takes ``(_ErrInfo, payload)`` off ``_messages`` and calls
    ``handle_error``, so the answer is written, logged and followed by a close like a 400 of the
    parser. ``_waiter`` is the future ``start`` sleeps on while no message is queued."""
    handler._messages.append((_ErrInfo(status=status, exc=exc, message=message), EMPTY_PAYLOAD))
    waiter = handler._waiter
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


def awaiting_request(handler: web.RequestHandler) -> bool:
    """Whether ``handler`` is idle between requests (``start`` waits on ``_waiter``): bytes now are
    the first of a new head."""
    waiter = handler._waiter
    return waiter is not None and not waiter.done()


def connections(server: web.Server) -> list[web.RequestHandler]:
    """The protocols of ``server``'s open connections (``_connections``, which its own
    ``pre_shutdown`` and ``shutdown`` walk)."""
    return list(server._connections)


def request_in_progress(handler: web.RequestHandler) -> bool:
    """Whether ``handler`` is running a request's handler (``_handle_request`` holds
    ``_request_in_progress`` from the call until the response is finished)."""
    return bool(handler._request_in_progress)


def handler_done(handler: web.RequestHandler) -> asyncio.Future[None]:
    """A future ``_handle_request`` resolves when the request in progress is answered: the
    ``_handler_waiter`` its ``shutdown`` creates for the same wait. Only while
    :func:`request_in_progress`."""
    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    handler._handler_waiter = waiter
    return waiter


def requests_parsed(handler: web.RequestHandler) -> int:
    """Request heads (or parser errors) ``handler`` has completed: ``_request_count`` moves when a
    head is whole, which is when the head deadline stops."""
    return int(handler._request_count)
