"""The access log line both front ends write, with the client as the trusted proxies in front
report it.

The lines themselves (text or JSON, with the pid) are :mod:`warp.logs`, shared with the device.
An access message is aiohttp's default (address, request line, status, body bytes) without its
second timestamp and with the seconds the request took; in JSON its fields are keys of their own.

``X-Forwarded-For`` is honoured only from the addresses in ``--forwarded-allow-ips`` (uvicorn's
name and default: the loopback), walked from the right as proxies append to it: the first address
that is not a trusted proxy is the client. Anyone else can write the header, so it is ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Final

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

ACCESS: Final = logging.getLogger("aiohttp.access")


def client(peer: str, forwarded_for: str | None, trusted: Collection[str]) -> str:
    """The client address to log: ``peer`` itself unless ``peer`` is a trusted proxy that passed
    an ``X-Forwarded-For`` — then the right-most address in it that is not a trusted proxy."""
    if not forwarded_for or not _trusts(trusted, peer):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _trusts(trusted, hop):
            return hop
    return hops[0] if hops else peer


def _trusts(trusted: Collection[str], address: str) -> bool:
    return "*" in trusted or address in trusted


def access(logger: logging.Logger, remote: str, method: str, target: str, status: int, size: int,
           seconds: float) -> None:
    """The one access line of both front ends (the data path and aiohttp's)."""
    logger.info('%s "%s %s HTTP/1.1" %d %d %.6f', remote, method, target, status, size, seconds,
                extra={"fields": {"remote": remote, "method": method, "target": target, "status": status,
                                  "bytes": size, "duration": round(seconds, 6)}})


def access_logger(trusted: Collection[str]) -> type[AbstractAccessLogger]:
    """aiohttp's access logger class for the requests aiohttp serves, writing :func:`access` lines
    (aiohttp instantiates the class itself, so the trusted proxies are bound here)."""

    class AccessLogger(AbstractAccessLogger):
        def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
            remote = client(request.remote or "-", request.headers.get("X-Forwarded-For"), trusted)
            access(self.logger, remote, request.method, request.raw_path, response.status,
                   response.body_length, time)

    return AccessLogger
