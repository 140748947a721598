"""The service's logs: one line per event, with the worker's pid; text or JSON; and the access log
line both front ends write, with the client as the trusted proxies in front report it.

Text lines are ``time pid logger level message``; an access message is aiohttp's default
(address, request line, status, body bytes) without its second timestamp and with the seconds
the request took. ``--log-format json`` writes one JSON object per line instead, the access fields
as their own keys, for a log pipeline that should not parse text.

``X-Forwarded-For`` is honoured only from the addresses in ``--forwarded-allow-ips`` (uvicorn's
name and default: the loopback), walked from the right as proxies append to it: the first address
that is not a trusted proxy is the client. Anyone else can write the header, so it is ignored.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Collection
from typing import Any, Final, final

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

FORMATS: Final = ("text", "json")
TEXT: Final = "%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"
ACCESS: Final = logging.getLogger("aiohttp.access")


def configure(level: str, fmt: str) -> None:
    """Route every logger to stderr in ``fmt`` at ``level`` (before the workers fork: they inherit it)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT))
    logging.basicConfig(level=level, handlers=[handler], force=True)


@final
class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, pid, level, logger, message, and the access fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {"time": self.formatTime(record), "pid": record.process, "level": record.levelname,
                               "logger": record.name, "message": record.getMessage()}
        access = getattr(record, "access", None)
        if isinstance(access, dict):
            doc.update(access)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc)


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
                extra={"access": {"remote": remote, "method": method, "target": target, "status": status,
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
