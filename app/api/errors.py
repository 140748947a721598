"""RFC 9457 problem details: every error the service returns is ``application/problem+json``.

Handlers raise :class:`Problem`; :func:`guard` turns it — and any aiohttp HTTP exception — into a
problem document, and turns anything unexpected into a 500 that says nothing about internals
(the traceback goes to the log, not to the client).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

from aiohttp import web

CONTENT_TYPE: Final = "application/problem+json"
TYPE_BASE: Final = "/problems/"
"""Problem types are relative URIs: each leads to ``GET /problems/<type>`` on the service that
answered (:mod:`app.api.problems`), which says what it means and what to do."""
log = logging.getLogger("warpzip")

TITLES: Final = {
    400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict",
    413: "Content Too Large", 414: "URI Too Long", 415: "Unsupported Media Type", 417: "Expectation Failed",
    431: "Request Header Fields Too Large", 500: "Internal Server Error", 503: "Service Unavailable",
}


class Problem(Exception):
    """An error response: ``slug`` names the problem type, ``detail`` explains this occurrence."""

    def __init__(self, status: int, slug: str, detail: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.detail = detail
        self.headers = dict(headers or {})


def render(problem: Problem) -> bytes:
    """The problem document's bytes (both front ends send exactly these)."""
    return json.dumps({"type": TYPE_BASE + problem.slug, "title": TITLES.get(problem.status, "Error"),
                       "status": problem.status, "detail": problem.detail}).encode()


def response(problem: Problem) -> web.Response:
    return web.Response(status=problem.status, body=render(problem), content_type=CONTENT_TYPE,
                        headers=problem.headers)


def internal() -> Problem:
    """The 500 for anything unexpected: it says nothing about internals (the log has the traceback)."""
    return Problem(500, "internal", "the server failed to handle the request; it has been logged")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def not_found(request: web.Request) -> web.StreamResponse:
    raise Problem(404, "not-found", f"no resource at {request.path}")


def method_not_allowed(allowed: str) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        raise Problem(405, "method-not-allowed", f"{request.method} is not allowed here; use {allowed}",
                      {"Allow": allowed})

    return handle


async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Run ``handler``, turning every error into a problem document."""
    try:
        return await handler(request)
    except Problem as problem:
        return response(problem)
    except ConnectionError as exc:
        # The client went away mid-request: nobody to answer. Treat it as aiohttp treats a
        # premature disconnection (a cancellation, logged at debug), not as a server error.
        raise asyncio.CancelledError from exc
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return response(from_http(request, exc))
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return response(internal())


def from_http(request: web.BaseRequest, exc: web.HTTPException) -> Problem:
    """The problem for an HTTP error aiohttp raised itself (an unroutable target such as
    ``OPTIONS *``, a body over its limit, an ``Expect`` it does not know)."""
    headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
    slug = {404: "not-found", 405: "method-not-allowed", 413: "body-too-large",
            417: "expectation-failed"}.get(exc.status, "http-error")
    detail = {404: f"no resource at {request.path or request.raw_path}",
              405: f"{request.method} is not allowed here; use {headers.get('Allow', 'another method')}",
              413: "the request body is larger than the service accepts",
              417: f"Expect: {request.headers.get('Expect', '')!r} is not supported; only 100-continue is",
              }.get(exc.status, exc.reason)
    return Problem(exc.status, slug, detail, headers)
