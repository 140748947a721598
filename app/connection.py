"""One client connection: the limits aiohttp's protocol leaves open, and its errors as problems.

aiohttp reads a request head for as long as the client takes (slowloris: a byte every few seconds
holds a connection forever), accepts connections without limit, and answers a request line or a
header over its parser limits with a text/plain 400 — plus an ERROR traceback in the log for each
one, which a hostile client can repeat at will. :class:`Connection` adds, per connection rather
than per request:

* a head deadline, ``--header-timeout``: counted from the connection's start for its first
  request and from the first byte of each later head; past it the client gets 408 and the
  connection closes. A kept-alive connection idle between requests is ``--keepalive-timeout``'s
  business, as is a pipelined head that arrived in one piece with the request before it and then
  stalls. The timer is one per connection, plus one per later head that arrives in several
  pieces; a head that arrives whole (every wrk or curl request) costs two attribute reads.
* a connection limit per worker, ``--max-connections``: a connection past it gets 503 with
  ``Retry-After`` and is closed.
* parser errors as RFC 9457 problems: 414 for a request line over ``REQUEST_LINE_LIMIT``, 431 for
  a header field over ``FIELD_LIMIT`` or more than ``MAX_HEADERS`` fields, 400 for anything else
  that is not HTTP/1.1; logged at debug level, without a traceback.
* a shutdown that lets a request in progress finish reading its body: aiohttp's drops every byte
  that arrives once it began, so a streamed upload could not finish within ``--shutdown-timeout``.

The hooks are aiohttp's own: a ``web.Server`` whose protocol is :class:`Connection`, installed by
:class:`Runner`, and the error path aiohttp uses for parser errors (a queued error that
``RequestHandler.start`` answers through ``handle_error``), so a 408 or 503 is written, logged and
followed by a close exactly like a 400 of the parser. The private names this takes are all in
:mod:`app.aiohttp_private`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Final

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong

from app import aiohttp_private, logs
from app.admission import Admission
from app.api import body, errors, failures
from app.api.errors import Problem
from app.budget import Bodies
from app.config import Config
from app.datapath import DataPath
from app.keys import ADMISSION, BODIES, DICTIONARIES, METRICS, RUNTIME
from app.metrics import Metrics
from warp import Runtime

log = logging.getLogger("warpzip")

REQUEST_LINE_LIMIT: Final = 4094
"""Bytes of the request target (gunicorn's request-line limit); ours are a few dozen."""
FIELD_LIMIT: Final = 8190
"""Bytes of one header field, name and value (aiohttp's and Apache's limit). It differs from
``REQUEST_LINE_LIMIT`` on purpose: the parser raises the same ``LineTooLong`` for both, with the
limit it applied, which is how :func:`parser_problem` tells 414 from 431."""
MAX_HEADERS: Final = 128
"""Header fields in one request (aiohttp's default)."""
TOO_MANY_HEADERS: Final = "Too many headers received"
"""The parser's message (C and Python parsers alike) for more than ``MAX_HEADERS`` fields."""
SHUTDOWN_FLOOR: Final = 0.1
"""The least time aiohttp's own shutdown of a connection is given once the request in progress had
all of ``--shutdown-timeout``: it cancels the handler and waits for that."""


def parser_problem(exc: BaseException | None) -> Problem:
    """The problem document for a request aiohttp's parser refused (``exc``, its exception)."""
    if isinstance(exc, LineTooLong):
        if exc.args[1] == REQUEST_LINE_LIMIT:
            return Problem(414, "uri-too-long", f"the request line is longer than {REQUEST_LINE_LIMIT} bytes")
        return Problem(431, "header-too-large", f"a header field is longer than {FIELD_LIMIT} bytes")
    if isinstance(exc, BadHttpMessage) and exc.message == TOO_MANY_HEADERS:
        return Problem(431, "too-many-headers", f"the request has more than {MAX_HEADERS} header fields")
    if isinstance(exc, HttpProcessingError):
        reason = exc.message.split("\n", 1)[0].rstrip(": ")[:200]
        return Problem(400, "bad-request", f"the request is not valid HTTP/1.1: {reason}")
    return errors.internal()


class Connection(web.RequestHandler):
    """aiohttp's protocol for one connection, with a head deadline and a connection limit."""

    __slots__ = ("_owner", "_head_timer", "_heads_before")

    def __init__(self, manager: Server, **kwargs: Any) -> None:
        super().__init__(manager, max_line_size=REQUEST_LINE_LIMIT, max_field_size=FIELD_LIMIT,
                         max_headers=MAX_HEADERS, **kwargs)
        self._owner = manager
        self._head_timer: asyncio.TimerHandle | None = None
        self._heads_before = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        owner = self._owner
        owner.open += 1
        if owner.open > owner.config.max_connections:
            self._answer(Problem(503, "overloaded", f"more than {owner.config.max_connections} connections are "
                                 "open; retry shortly", body.RETRY_AFTER))
            return
        self._arm()

    async def shutdown(self, timeout: float | None = 15.0) -> None:
        """aiohttp's shutdown, after the request in progress was given up to ``timeout`` with the
        connection still reading: aiohttp's first sets ``_force_close``, which drops every byte
        that arrives after it (see :meth:`Server.pre_shutdown`)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        if aiohttp_private.request_in_progress(self):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(aiohttp_private.handler_done(self)), timeout)
        # Never 0: aiohttp's ceil_timeout takes 0 for no timeout at all.
        left = None if timeout is None else max(SHUTDOWN_FLOOR, timeout - (loop.time() - started))
        await super().shutdown(left)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        timer = self._head_timer
        if timer is not None:
            if aiohttp_private.requests_parsed(self) != self._heads_before:  # the head (or an error) is complete
                timer.cancel()
                self._head_timer = None
        elif data and aiohttp_private.awaiting_request(self):
            self._arm()  # bytes of a new head on an idle kept-alive connection, not all of it

    def connection_lost(self, exc: BaseException | None) -> None:
        self._owner.open -= 1
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """Every error aiohttp answers itself (parser errors, our 408 and 503) as a problem."""
        if request.writer.output_size > 0:  # a response is under way: aiohttp breaks the connection
            return super().handle_error(request, status, exc, message)
        problem = exc if isinstance(exc, Problem) else parser_problem(exc)
        if isinstance(exc, Problem | HttpProcessingError):  # the client's doing: no traceback
            log.debug("%d for %s: %s", problem.status, request.remote, problem.detail)
        else:
            log.error("error handling a request from %s", request.remote, exc_info=exc)
        self._owner.metrics.count_refused(problem.status)
        response = errors.response(problem)
        response.force_close()
        return response

    def _arm(self) -> None:
        self._heads_before = aiohttp_private.requests_parsed(self)
        self._head_timer = self._loop.call_later(self._owner.config.header_timeout, self._head_expired)

    def _head_expired(self) -> None:
        self._head_timer = None
        self._answer(failures.header_timeout(self._owner.config.header_timeout))

    def _answer(self, problem: Problem) -> None:
        """Answer ``problem`` in place of the next request and close, as aiohttp does a parser error."""
        aiohttp_private.queue_error(self, problem.status, problem, problem.detail)


class Server(web.Server):
    """aiohttp's low-level server whose connections start on the data path (:mod:`app.datapath`)
    and move to a :class:`Connection` for everything the data path does not serve."""

    max_line: Final = REQUEST_LINE_LIMIT
    max_field: Final = FIELD_LIMIT
    max_fields: Final = MAX_HEADERS

    def __init__(self, plain: web.Server, app: web.Application, config: Config, **protocol: Any) -> None:
        loop = asyncio.get_running_loop()
        super().__init__(self._handle, request_factory=plain.request_factory, loop=loop, **protocol)
        self._app_handler = plain.request_handler
        self.runtime: Runtime = app[RUNTIME]  # opened by the app's cleanup context, which has run
        self.config = config
        self.metrics: Metrics = app[METRICS]
        self.admission: Admission = app[ADMISSION]
        self.access_log: logging.Logger | None = protocol.get("access_log")
        self.open = 0
        self.stopping = False
        self.bodies: Bodies = app[BODIES]  # what bodies still arriving hold of the heap
        self.dictionaries = app[DICTIONARIES]  # opened with the runtime, as it is
        self.trusted_proxies = config.trusted_proxies
        self.datapaths: set[DataPath] = set()
        self._drained = asyncio.Event()
        self._protocol = protocol
        self.event_loop = loop

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """The application, with the errors aiohttp raises outside any route — a target no route
        can match (``OPTIONS *``, ``CONNECT host:443``), an ``Expect`` refused before the body —
        answered as problems too. One frame per request on aiohttp's path, not a middleware."""
        try:
            return await self._app_handler(request)
        except (Problem, web.HTTPException) as exc:
            if isinstance(exc, web.HTTPException) and exc.status < 400:
                raise
            problem = exc if isinstance(exc, Problem) else errors.from_http(request, exc)
            self.metrics.count_refused(problem.status)
            response = errors.response(problem)
            response.force_close()  # the body, if any, was not read
            return response

    def __call__(self) -> DataPath:  # type: ignore[override]  # the protocol factory aiohttp hands to the loop
        return DataPath(self)

    def connection(self) -> Connection:
        """An aiohttp protocol, for a connection the data path hands over."""
        return Connection(self, loop=self.event_loop, **self._protocol)

    def forget(self, datapath: DataPath) -> None:
        """``datapath`` closed or handed its connection over."""
        self.datapaths.discard(datapath)
        if self.stopping and not self.datapaths:
            self._drained.set()

    def pre_shutdown(self) -> None:
        """Stop taking requests: idle connections close now, busy ones after their response.

        Not aiohttp's own: it calls ``close()`` on every connection, after which ``data_received``
        drops each byte, so a request whose body was still arriving — a streamed upload — could
        never finish however long ``--shutdown-timeout``. A busy aiohttp connection is told to
        close after its response instead, and reads on (:meth:`Connection.shutdown` waits for it)."""
        self.stopping = True
        for datapath in list(self.datapaths):
            if datapath.close_if_idle():
                self.forget(datapath)
        if not self.datapaths:
            self._drained.set()
        for conn in aiohttp_private.connections(self):
            if aiohttp_private.request_in_progress(conn):
                conn.keep_alive(False)
            else:
                conn.close()

    async def shutdown(self, timeout: float | None = None) -> None:
        """Wait up to ``timeout`` for the requests in progress on both kinds of connection."""
        async def drained() -> None:
            try:
                await asyncio.wait_for(self._drained.wait(), timeout)
            except TimeoutError:
                for datapath in list(self.datapaths):
                    datapath.abort()

        await asyncio.gather(super().shutdown(timeout), drained())


class Runner(web.AppRunner):
    """``web.AppRunner`` whose server is :class:`Server` (aiohttp builds its own in ``_make_server``,
    the runner's extension point; ours takes over its request handler and factory)."""

    def __init__(self, app: web.Application, config: Config, access_log: logging.Logger | None) -> None:
        super().__init__(app, handle_signals=False, shutdown_timeout=config.shutdown_timeout)
        self.config = config
        # auto_decompress=False: a Content-Encoding body is answered 415 by the handler, never
        # inflated (or rejected as text/plain by the parser) behind its back.
        self.protocol: dict[str, Any] = {"access_log": access_log, "auto_decompress": False,
                                         "keepalive_timeout": config.keepalive_timeout,
                                         "access_log_class": logs.access_logger(config.trusted_proxies)}

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # starts the app (its cleanup_ctx) and freezes it
        return Server(plain, self.app, self.config, **self.protocol)
