"""Log lines as every warpzip process writes them: ``time pid logger level message``, or with
``--log-format json`` one JSON object per line (the fields a record carries in ``extra["fields"]``
as keys of their own), so the service and its device log alike into one pipeline."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, Final, final

FORMATS: Final = ("text", "json")
TEXT: Final = "%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"


def configure(level: str | int, fmt: str) -> None:
    """Route every logger to stderr in ``fmt`` at ``level`` (before a fork: children inherit it)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT))
    logging.basicConfig(level=level, handlers=[handler], force=True)


@final
class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, pid, level, logger, message, and ``extra["fields"]``."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {"time": self.formatTime(record), "pid": record.process, "level": record.levelname,
                               "logger": record.name, "message": record.getMessage()}
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update(fields)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc)
