"""Plain HTTP/1.1 requests against a real server, and the checks every error response must pass:
RFC 9457 problem details that leak nothing about the host."""

from __future__ import annotations

import http.client
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

PROBLEM_TYPE = "application/problem+json"
PROBLEM_KEYS = {"type", "title", "status", "detail"}


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def content_type(self) -> str:
        return (self.headers.get("Content-Type") or "").split(";")[0].strip()

    def json(self) -> Any:
        return json.loads(self.body)


def call(url: str, method: str = "GET", path: str = "/", body: bytes | None = None,
            headers: Mapping[str, str] | None = None, timeout: float = 60.0) -> Reply:
    """One request on a fresh connection; 4xx/5xx are returned, never raised."""
    parts = urlsplit(url)
    assert parts.hostname is not None, url
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        response = conn.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        conn.close()


def check_problem(reply: Reply, status: int, root: Path | None = None) -> dict[str, Any]:
    """``reply`` is a problem document for ``status`` that names no internals; returns the document."""
    assert reply.status == status, (reply.status, reply.body[:500])
    assert reply.content_type == PROBLEM_TYPE, reply.headers
    doc = reply.json()
    assert isinstance(doc, dict)
    assert PROBLEM_KEYS <= doc.keys(), doc
    assert doc["status"] == status
    assert isinstance(doc["type"], str) and doc["type"]
    assert isinstance(doc["title"], str) and doc["title"]
    assert isinstance(doc["detail"], str) and doc["detail"]
    check_no_leak(reply.body, root)
    return doc


def check_no_leak(body: bytes, root: Path | None = None) -> None:
    """No traceback, no source path and (given ``root``) no runtime path in a response body."""
    text = body.decode("utf-8", "replace")
    assert "Traceback" not in text, text
    assert 'File "' not in text, text
    if root is not None:
        assert str(root) not in text, text
        assert str(root.resolve()) not in text, text
