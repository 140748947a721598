"""HTTP resources, one module each; :func:`routes` wires them into an application.

Every handler is wrapped at registration by ``instrument`` (metrics around the problem+json
guard) instead of running under an aiohttp middleware: aiohttp rebuilds the middleware chain for
every request (``functools.update_wrapper`` per layer), which cost ~14 µs a request here. Other
methods on a known path and unknown paths get catch-all routes that answer 405 (with ``Allow``)
and 404 as problem documents, so no request escapes the wrapping.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from app.api import compress, dictionaries, errors, health, index, metrics, problems

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Instrument = Callable[[str, Handler], Handler]

RESOURCES: dict[str, tuple[str, Handler]] = {
    "/": ("GET", index.handle),
    "/compress": ("POST", compress.handle_compress),
    "/decompress": ("POST", compress.handle_decompress),
    "/healthz": ("GET", health.handle_healthz),
    "/device": ("GET", health.handle_device),
    "/metrics": ("GET", metrics.handle),
    "/problems": ("GET", problems.handle_index),
    "/problems/{slug}": ("GET", problems.handle),
}
#: Resources with more than one method.
MULTI: dict[str, dict[str, Handler]] = {**dictionaries.RESOURCES}


def routes(app: web.Application, instrument: Instrument) -> None:
    """Each resource with its method (HEAD wherever GET is: aiohttp sends the head without the
    body), a 405 for the others, and a 404 for every other path."""
    router = app.router
    every = [(path, {method: handler}) for path, (method, handler) in RESOURCES.items()] + list(MULTI.items())
    for path, methods in every:
        for method, handler in methods.items():
            wrapped = instrument(path, handler)
            if method == "POST" and path in compress.DIRECTIONS:
                router.add_route(method, path, wrapped, expect_handler=compress.expect_continue)
            else:
                router.add_route(method, path, wrapped)
            if method == "GET":
                router.add_route("HEAD", path, wrapped)
        allowed = ", ".join(sorted({*methods, *(("HEAD",) if "GET" in methods else ())}))
        router.add_route("*", path, instrument(path, errors.method_not_allowed(allowed)))
    router.add_route("*", "/{tail:.*}", instrument("unmatched", errors.not_found))
