"""The data path: ``POST /compress`` and ``/decompress`` from the socket into the SVA heap and back.

Every connection starts on a :class:`DataPath`, an ``asyncio.BufferedProtocol``. A request head
that :func:`app.head.parse` accepts (the well-formed POST with a Content-Length that every client
sends) is served here: its body is received straight into an SVA buffer (``get_buffer`` hands the
transport the buffer's memory, so the kernel copies the bytes where the device reads them; only
what arrived in the same read as the head is copied once, from the head buffer), the job goes to
the runtime, and the response is written from the result's view. Anything else — another route
or method, a malformed or incomplete head, ``Expect``, chunked bodies, streams, bad parameters — is handed
over with the bytes received so far to aiohttp's protocol (:class:`app.connection.Connection`),
which owns that connection from then on and answers exactly as it always did.

Why: aiohttp's per-request machinery (message, multidict, URL, stream reader, request, response,
writer, task, middleware-free handler call) costs more than the zstd of a 4 KiB body, and more
than the whole hand-off to the device. BENCHMARKS.md has the profiles before and after.

Per connection one timer watches the deadlines lazily (``--header-timeout`` for the first head,
``--keepalive-timeout`` while idle, ``--body-timeout`` while a body arrives): requests only store
the time their phase began, and the timer, when it fires, re-arms itself for the deadline that
applies then. Only a body can bring a deadline earlier than the one the timer is set for, so only
a body that does not arrive with its head moves the timer. A job in flight has the runtime's
``--job-timeout``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Final, cast, final

from aiohttp.http import SERVER_SOFTWARE

from app import head as heads
from app.api import compress, errors, failures
from app.api.body import CONTENT_TYPES, out_of_memory
from app.api.errors import Problem
from app.budget import grown
from app.exchange import Request, release_when_sent
from app.metrics import CLIENT_CLOSED
from warp import HeapExhausted, Result
from warp.iommu import pagetable
from warp.mem import Buffer
from warp.session import Lz77Compressor

if TYPE_CHECKING:
    from app.connection import Server

log = logging.getLogger("warpzip")

HEAD_BUFFER: Final = 16 << 10
"""Bytes of a connection's head buffer: a head and a small body arrive in it together (a 4 KiB
request is one read); a larger body goes there only up to this much, the rest straight into SVA."""
COPY_BELOW: Final = 16 << 10
"""Results smaller than this are joined with the head into one ``bytes`` and written at once; larger
ones go out as the head plus a view of the heap in one ``writelines`` (no copy)."""

# Phases of a connection.
_HEAD: Final = 0  # waiting for (or parsing) a request head
_BODY: Final = 1  # receiving a body into an SVA buffer
_DISCARD: Final = 2  # dropping the body of a request already answered (refused before its body)
_BUSY: Final = 3  # the job runs or its response is being written
_CLOSED: Final = 4


@final
class DataPath(asyncio.BufferedProtocol):
    """One client connection on the data path (see the module docstring)."""

    __slots__ = ("_server", "_loop", "_transport", "_buf", "_mv", "_start", "_end", "_phase", "_since",
                 "_timer", "_requests", "_body", "_got", "_need", "_request", "_paused_reading",
                 "_paused_writing", "_keep_alive", "_peer", "_held")

    def __init__(self, server: Server) -> None:
        self._server = server
        self._loop = server.event_loop
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray(HEAD_BUFFER)
        self._mv = memoryview(self._buf)
        self._start = self._end = 0
        self._phase = _HEAD
        self._since = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._requests = 0
        self._body: Buffer | None = None
        self._got = self._need = 0
        self._request: Request | None = None
        self._paused_reading = self._paused_writing = False
        self._keep_alive = True
        self._peer = "-"
        self._held = 0  # heap bytes this connection's unfinished body holds (``Bodies.held``)

    # ---- asyncio protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        server = self._server
        server.open += 1
        if server.open > server.config.max_connections or server.stopping:
            self._hand_over()  # aiohttp's connection answers 503 and closes
            return
        server.datapaths.add(self)
        if server.access_log is not None:
            peer = self._transport.get_extra_info("peername")
            self._peer = str(peer[0]) if isinstance(peer, tuple) else "-"
        self._since = self._loop.time()
        self._timer = self._loop.call_at(self._since + server.config.header_timeout, self._watch)

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._phase == _BODY:
            assert self._body is not None
            return self._body.view[self._got:self._need]
        if self._phase == _DISCARD:
            return self._mv[:min(self._need - self._got, HEAD_BUFFER)]
        if self._end == HEAD_BUFFER:
            self._compact()
        return self._mv[self._end:]

    def buffer_updated(self, nbytes: int) -> None:
        phase = self._phase
        if phase == _BODY:
            self._got += nbytes
            if self._got == self._need:
                self._body_complete()
            elif self._body is not None and self._got == self._body.capacity:
                self._grow()
        elif phase == _DISCARD:
            self._got += nbytes
            if self._got == self._need:
                self._idle()
        else:
            self._end += nbytes
            if phase == _HEAD:
                self._next()
            elif self._end == HEAD_BUFFER and not self._paused_reading:
                self._paused_reading = True  # busy, and the client sends more than we hold: wait
                assert self._transport is not None
                self._transport.pause_reading()

    def eof_received(self) -> bool:
        """The client sent all it will: a request in progress is still answered, then we close."""
        self._keep_alive = False
        return self._phase == _BUSY

    def connection_lost(self, exc: BaseException | None) -> None:
        server = self._server
        server.open -= 1
        server.forget(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._phase == _BODY:
            self._abort_body(CLIENT_CLOSED)
        self._phase = _CLOSED
        self._transport = None

    def pause_writing(self) -> None:
        self._paused_writing = True

    def resume_writing(self) -> None:
        self._paused_writing = False
        if self._phase == _HEAD:
            self._next()

    # ---- requests --------------------------------------------------------------------------
    def _next(self) -> None:
        """Serve the next request whose head is in the buffer, or hand the connection over."""
        if self._paused_writing or self._start == self._end:
            return
        buf = self._buf
        end_of_head = buf.find(b"\r\n\r\n", self._start, self._end)
        if end_of_head < 0:
            self._hand_over()  # a head in pieces (a slow or unusual client): aiohttp's deadlines apply
            return
        server = self._server
        config = server.config
        head = heads.parse(self._mv[self._start:end_of_head], server.max_line, server.max_field, server.max_fields)
        if head is None or head.length > config.stream_threshold:  # a stream, or a 413: aiohttp's
            self._hand_over()
            return
        runtime = server.runtime
        direction = compress.DIRECTIONS[head.route]
        try:
            session = compress.session_for(direction, head.params(), runtime, config, server.dictionaries)
        except Problem:
            self._hand_over()  # aiohttp answers the 400 (and reads the body) as before
            return
        if isinstance(session, Lz77Compressor):  # several BDs and a frame built here: aiohttp's path
            self._hand_over()
            return
        self._requests += 1
        self._keep_alive = head.keep_alive and not server.stopping
        self._request = Request(head, direction, session, server.metrics.begin())
        self._start = end_of_head + 4
        admission = server.admission
        if not admission.admit():
            self._refuse(failures.overloaded(admission.limit))
            return
        length = head.length
        have = min(self._end - self._start, length)
        try:
            body = runtime.alloc(server.bodies.first(length, have))
        except HeapExhausted:
            admission.leave()
            self._refuse(out_of_memory())
            return
        body.view[:have] = self._mv[self._start:self._start + have]
        self._start += have
        self._body, self._got, self._need = body, have, length
        if have == length:
            self._body_complete()
        else:
            self._phase = _BODY
            self._hold(body.capacity)
            self._start_waiting()

    def _hold(self, nbytes: int) -> None:
        """This connection's waiting body holds ``nbytes`` of heap (0 when it completes or ends)."""
        self._server.bodies.held += nbytes - self._held
        self._held = nbytes

    def _grow(self) -> None:
        """A body that arrives past its buffer: the next size by :func:`app.budget.grown`."""
        old = self._body
        assert old is not None
        try:
            bigger = self._server.runtime.alloc(grown(old.capacity, self._got + 1, self._need))
        except HeapExhausted:
            self._fail_body(out_of_memory())
            return
        bigger.view[:self._got] = old.view[:self._got]
        old.release()
        self._body = bigger
        self._hold(bigger.capacity)

    def _body_complete(self) -> None:
        body, request = self._body, self._request
        assert body is not None and request is not None
        self._body = None
        self._hold(0)
        self._phase = _BUSY
        # The CPU wrote these pages (the socket did, into our memory): mark them as the CPU fault
        # path would, so a page the IOMMU lost meanwhile is present again, not a device fault.
        pagetable.populate(body.heap.space.page_table, body.offset, self._need, write=True)
        request.size = self._need
        request.driver = self._server.runtime.driver.name
        request.job_started = time.perf_counter()
        try:
            request.session.submit_buffer(body, self._need, self._job_done)
        except failures.JOB_ERRORS as exc:  # refused before it ran (output too large, no memory, stopping)
            self._job_done(exc)

    def _job_done(self, outcome: Result | BaseException) -> None:
        """The job's outcome (a callback of the runtime, on the loop): answer it."""
        request = self._request
        assert request is not None
        server = self._server
        if isinstance(outcome, failures.JOB_ERRORS):
            self._answer_problem(failures.job_problem(outcome))
        elif isinstance(outcome, BaseException):
            log.error("unhandled error in POST %s", request.head.route, exc_info=outcome)
            self._answer_problem(errors.internal())
        else:
            compress.observe(server.metrics, request.driver, request.job_started, request.direction, request.size,
                             outcome)
            self._answer(outcome, request)
        server.admission.leave()
        self._finish()

    def _answer(self, result: Result, request: Request) -> None:
        view = result.view
        length = len(view)
        uncompressed = request.size if request.direction == "compress" else length
        head = self._head(200, CONTENT_TYPES[request.direction], length,
                          {"X-Uncompressed-Length": str(uncompressed)})
        transport = self._transport
        if transport is None or transport.is_closing():
            request.status = CLIENT_CLOSED
            result.release()
        elif length < COPY_BELOW:
            transport.write(b"".join((head, view)))
            result.release()
        else:
            transport.writelines((head, view))
            release_when_sent(result, transport)

    def _refuse(self, problem: Problem) -> None:
        """Answer before the body is read, then drop the body as it arrives."""
        self._answer_problem(problem)
        assert self._request is not None
        length = self._request.head.length
        have = min(self._end - self._start, length)
        self._start += have
        self._finish(keep_phase=True)
        if have == length:
            self._idle()
        else:
            self._phase = _DISCARD
            self._got, self._need = have, length
            self._start_waiting()

    def _answer_problem(self, problem: Problem) -> None:
        """Write ``problem`` as the answer to the request in progress (or, before any request, to
        the connection: the first head's 408)."""
        transport = self._transport
        if transport is None or transport.is_closing():
            if self._request is not None:
                self._request.status = CLIENT_CLOSED
            return
        document = errors.render(problem)
        transport.write(self._head(problem.status, errors.CONTENT_TYPE, len(document), problem.headers) + document)

    def _fail_body(self, problem: Problem) -> None:
        """A body that will not complete (too slow, no memory to grow into): answer, free, close."""
        self._keep_alive = False
        self._answer_problem(problem)
        self._abort_body(problem.status)
        self._close()

    def _close(self) -> None:
        self._phase = _CLOSED
        if self._transport is not None:
            self._transport.close()

    def _head(self, status: int, content_type: str, length: int, extra: dict[str, str]) -> bytes:
        if (request := self._request) is not None:
            request.status, request.sent = status, length
        return heads.response_head(status, heads.REASONS[status], content_type, length, extra, self._keep_alive,
                                   heads.http_date(), SERVER_SOFTWARE)

    def _finish(self, keep_phase: bool = False) -> None:
        """The response is written (or, when discarding, sent ahead of the rest of the body)."""
        request = self._request
        assert request is not None
        server = self._server
        server.metrics.end(request.head.route, "POST", request.status, request.started)
        if server.access_log is not None:
            request.log(server.access_log, self._peer, server.trusted_proxies)
        self._request = None
        if not keep_phase:
            self._idle()

    def _idle(self) -> None:
        """Between requests: close if this was the last one, else serve what is buffered."""
        transport = self._transport
        if transport is None:
            return
        if not self._keep_alive:
            self._close()
            return
        self._phase = _HEAD
        self._since = self._loop.time()
        if self._paused_reading:
            self._compact()
            self._paused_reading = False
            transport.resume_reading()
        self._next()

    def _abort_body(self, status: int) -> None:
        """The body will not complete (client gone, too slow): free its buffer and admission."""
        body, request = self._body, self._request
        self._body = None
        self._hold(0)
        if body is not None:
            body.release()
        if request is not None:
            request.status = status
            self._server.admission.leave()
            self._finish(keep_phase=True)

    # ---- connection management ---------------------------------------------------------------
    def _watch(self) -> None:
        """The connection's one timer: act on the deadline of the current phase, or re-arm for it."""
        self._timer = None
        config = self._server.config
        phase = self._phase
        if phase == _HEAD:
            limit = config.header_timeout if not self._requests else config.keepalive_timeout
        elif phase in (_BODY, _DISCARD):
            limit = config.body_timeout
        elif phase == _BUSY:  # nothing to enforce while the job runs (it has --job-timeout): look later
            self._timer = self._loop.call_later(config.keepalive_timeout, self._watch)
            return
        else:
            return
        now = self._loop.time()
        deadline = self._since + limit
        if now < deadline:
            self._timer = self._loop.call_at(deadline, self._watch)
            return
        self._expire(phase)

    def _start_waiting(self) -> None:
        """A body starts to arrive: its deadline may come before the one the timer is set for."""
        self._since = now = self._loop.time()
        deadline = now + self._server.config.body_timeout
        timer = self._timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = self._loop.call_at(deadline, self._watch)

    def _expire(self, phase: int) -> None:
        if self._transport is None:
            return
        config = self._server.config
        if phase == _BODY:
            self._fail_body(failures.body_timeout(config.body_timeout))
            return
        if phase == _HEAD and not self._requests:
            self._server.metrics.count_refused(408)
            self._keep_alive = False
            self._answer_problem(failures.header_timeout(config.header_timeout))
        self._close()

    def _compact(self) -> None:
        """Move the unread bytes to the front of the head buffer."""
        start, end = self._start, self._end
        if start:
            self._buf[:end - start] = self._buf[start:end]
            self._start, self._end = 0, end - start

    def _hand_over(self) -> None:
        """Give the connection, and every byte of it not consumed yet, to aiohttp's protocol."""
        transport = self._transport
        assert transport is not None
        server = self._server
        server.open -= 1  # the aiohttp connection counts itself
        server.forget(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._phase = _CLOSED
        pending = bytes(self._buf[self._start:self._end])
        self._transport = None
        protocol = server.connection()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self._paused_reading:
            transport.resume_reading()
        if pending:
            protocol.data_received(pending)

    def close_if_idle(self) -> bool:
        """Shutdown: close now if no request is in progress; True if closed."""
        if self._phase == _HEAD and self._start == self._end and self._transport is not None:
            self._close()
            return True
        self._keep_alive = False  # finish the request in progress, then close
        return False

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()
