"""The request heads the data path serves itself, recognised without I/O (h11's sans-I/O shape).

:func:`parse` looks at one request head and answers either a :class:`Head` — a request the data
path (:mod:`app.datapath`) can serve from start to end — or ``None``: anything else, which the
connection then hands, untouched, to aiohttp. The grammar is therefore deliberately narrow: a
``POST`` of ``/compress`` or ``/decompress`` over HTTP/1.1, with exactly one plain decimal
``Content-Length``, no ``Transfer-Encoding``, ``Expect``, ``Content-Encoding`` or ``Upgrade``, a
plain query, and every header line well-formed by RFC 9110 (token name, visible value, CRLF). The
message framing is decided by the single Content-Length alone, so a head two parsers could read
differently (request smuggling) is never one the data path accepts. Everything outside the grammar
— parser errors, limits, ``100-continue``, chunked bodies, other routes, bad parameters — is
aiohttp's, which answers exactly as it did before the data path existed.

Why not aiohttp's parser: it builds a message object, a multidict, a URL and a stream reader per
request, most of aiohttp's ~70 µs echo floor at 4 KiB (BENCHMARKS.md); this module's work is a
regular-expression match per line.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Mapping
from email.utils import formatdate
from http import HTTPStatus
from typing import Final, final

ROUTES: Final = frozenset({b"/compress", b"/decompress"})
#: ``POST /compress?level=5 HTTP/1.1``: a target of path and a plain query (no %-escapes, no ``+``;
#: those are rare and aiohttp decodes them).
_REQUEST_LINE: Final = re.compile(rb"POST (/[a-z]+)(?:\?([A-Za-z0-9=&_.~-]*))? HTTP/1\.1")
#: ``name: value`` with a token name and a value of visible characters, spaces and tabs (obs-text
#: allowed, as llhttp does); a bare CR or LF, a NUL or other control character never matches.
_FIELD: Final = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):([\t\x20-\x7e\x80-\xff]*)")
_DIGITS: Final = re.compile(rb"[0-9]{1,19}")
#: Headers that change the message's framing or meaning: their presence sends the request to aiohttp.
_NOT_OURS: Final = frozenset({b"transfer-encoding", b"expect", b"content-encoding", b"upgrade"})


@final
class Head:
    """A request the data path serves: its route, raw query, declared body length, keep-alive,
    and the ``X-Forwarded-For`` a proxy added (for the access log; :func:`app.logs.client`)."""

    __slots__ = ("route", "query", "length", "keep_alive", "target", "forwarded_for")

    def __init__(self, route: str, query: bytes, length: int, keep_alive: bool, target: bytes,
                 forwarded_for: bytes | None = None) -> None:
        self.route = route
        self.query = query
        self.length = length
        self.keep_alive = keep_alive
        self.target = target
        self.forwarded_for = forwarded_for

    def params(self) -> dict[str, str]:
        """The query's parameters, the first of a repeated name winning (as aiohttp's ``query.get``)."""
        found: dict[str, str] = {}
        if self.query:
            for pair in self.query.decode("ascii").split("&"):
                name, _, value = pair.partition("=")
                found.setdefault(name, value)
        return found


def parse(head: bytes | bytearray | memoryview, max_line: int, max_field: int, max_fields: int) -> Head | None:
    """``head`` is one request head without its final CRLF CRLF; ``None`` if the data path must not
    serve it (see the module docstring). The limits are the ones aiohttp enforces, so a head past
    any of them goes to aiohttp and gets its 414 or 431."""
    lines = bytes(head).split(b"\r\n")
    line = lines[0]
    if len(line) > max_line or len(lines) - 1 > max_fields:
        return None
    start = _REQUEST_LINE.fullmatch(line)
    if start is None or start[1] not in ROUTES:
        return None
    fields = _fields(lines[1:], max_field)
    if fields is None:
        return None
    length, keep_alive, forwarded_for = fields
    if not length:  # no body, or an empty one: rare, and aiohttp's rules for it apply
        return None
    return Head(start[1].decode("ascii"), start[2] or b"", length, keep_alive, line[5:-9], forwarded_for)


def _fields(lines: list[bytes], max_field: int) -> tuple[int | None, bool, bytes | None] | None:
    """The declared length, keep-alive and X-Forwarded-For of a head's field lines; ``None`` if
    one is not ours."""
    length: int | None = None
    keep_alive = True
    forwarded_for: bytes | None = None
    for field in lines:
        if len(field) > max_field:
            return None
        match = _FIELD.fullmatch(field)
        if match is None:
            return None
        name = match[1].lower()
        if name == b"content-length":
            value = match[2].strip(b" \t")
            if length is not None or not _DIGITS.fullmatch(value):
                return None
            length = int(value)
        elif name == b"connection":
            options = {option.strip(b" \t").lower() for option in match[2].split(b",")}
            if b"upgrade" in options:
                return None
            keep_alive = keep_alive and b"close" not in options
        elif name == b"x-forwarded-for":
            forwarded_for = match[2].strip(b" \t") if forwarded_for is None else forwarded_for + b"," + match[2]
        elif name in _NOT_OURS:
            return None
    return length, keep_alive, forwarded_for


def response_head(status: int, reason: str, content_type: str, length: int, extra: Mapping[str, str],
                  keep_alive: bool, date: str, server: str) -> bytes:
    """A response head with the fields aiohttp writes (Content-Type, Content-Length, Date, Server,
    ``Connection: close`` when the connection ends), plus ``extra``."""
    fields = "".join(f"{name}: {value}\r\n" for name, value in extra.items())
    closing = "" if keep_alive else "Connection: close\r\n"
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n"
            f"{fields}{closing}Date: {date}\r\nServer: {server}\r\n\r\n").encode("latin-1")


REASONS: Final = {status.value: status.phrase for status in HTTPStatus}
"""The reason phrase of each status code, for the status line."""


def http_date() -> str:
    """The Date header's value, formatted once a second (aiohttp caches it the same way)."""
    return _http_date(int(time.time()))


@functools.lru_cache(maxsize=2)
def _http_date(second: int) -> str:
    return formatdate(second, usegmt=True)
