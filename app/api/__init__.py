"""HTTP resources, one module each; :func:`routes` wires them into an application."""

from __future__ import annotations

from aiohttp import web

from app.api import compress, health, index, metrics


def routes(app: web.Application) -> None:
    app.router.add_get("/", index.handle)
    app.router.add_post("/compress", compress.handle_compress)
    app.router.add_post("/decompress", compress.handle_decompress)
    app.router.add_get("/healthz", health.handle_healthz)
    app.router.add_get("/device", health.handle_device)
    app.router.add_get("/metrics", metrics.handle)
