"""One typed configuration object, filled from CLI flags whose defaults come from ``WARPZIP_*``
environment variables (a flag beats the variable, the variable beats the built-in default)."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, final

from warp import cdev


@final
@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 8080
    root: Path = cdev.default_root()
    workers: int = 1
    device: str = "embedded"  # embedded | external | none
    engines: int = 2
    queues: int = 2
    max_body: int = 64 << 20
    max_pending: int = 1024
    heap_size: int = 1 << 30
    shutdown_timeout: float = 10.0
    job_timeout: float = 30.0
    body_timeout: float = 30.0
    access_log: bool = True
    log_level: str = "INFO"


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad value is one clear line and exit status 2 (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


def _env(name: str, default: object) -> str:
    return os.environ.get(f"WARPZIP_{name.upper()}", str(default))


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text}")


def serve_parser() -> argparse.ArgumentParser:
    d = Config()
    p = _Parser(prog="warpzip serve", description="Serve POST /compress on the simulated accelerator. "
                "Every flag can also be set with the WARPZIP_<FLAG> environment variable "
                "(for example WARPZIP_PORT=8081, WARPZIP_MAX_BODY=1048576).")
    p.add_argument("--host", default=_env("host", d.host), help="address to listen on (WARPZIP_HOST)")
    p.add_argument("--port", type=_port, default=_env("port", d.port), help="TCP port (WARPZIP_PORT)")
    p.add_argument("--root", type=Path, default=_env("root", d.root),
                   help="runtime root holding sys/ and dev/ of the device (WARPZIP_ROOT)")
    p.add_argument("--workers", type=_positive, default=_env("workers", d.workers),
                   help="HTTP worker processes sharing the port (WARPZIP_WORKERS)")
    p.add_argument("--device", choices=("embedded", "external", "none"), default=_env("device", d.device),
                   help="embedded: start a device and stop it on exit; external: use one already running "
                        "under --root; none: cpu driver only (WARPZIP_DEVICE)")
    p.add_argument("--engines", type=_positive, default=_env("engines", d.engines),
                   help="engines of the embedded device (WARPZIP_ENGINES)")
    p.add_argument("--queues", type=_positive, default=_env("queues", d.queues),
                   help="hardware queues per worker and direction (WARPZIP_QUEUES)")
    p.add_argument("--max-body", type=_positive, default=_env("max_body", d.max_body),
                   help="largest request body in bytes (WARPZIP_MAX_BODY)")
    p.add_argument("--max-pending", type=_positive, default=_env("max_pending", d.max_pending),
                   help="requests in progress per worker before 503 (WARPZIP_MAX_PENDING)")
    p.add_argument("--heap-size", type=_positive, default=_env("heap_size", d.heap_size),
                   help="SVA heap per worker in bytes (WARPZIP_HEAP_SIZE)")
    p.add_argument("--shutdown-timeout", type=_seconds, default=_env("shutdown_timeout", d.shutdown_timeout),
                   help="seconds to finish in-flight requests on SIGTERM (WARPZIP_SHUTDOWN_TIMEOUT)")
    p.add_argument("--body-timeout", type=_seconds, default=_env("body_timeout", d.body_timeout),
                   help="seconds a client may take to send its body before a 408 (WARPZIP_BODY_TIMEOUT)")
    p.add_argument("--job-timeout", type=_seconds, default=_env("job_timeout", d.job_timeout),
                   help="seconds before a device job is abandoned (WARPZIP_JOB_TIMEOUT)")
    p.add_argument("--access-log", type=_bool, default=_env("access_log", d.access_log),
                   help="log every request (WARPZIP_ACCESS_LOG)")
    p.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                   default=_env("log_level", d.log_level), help="(WARPZIP_LOG_LEVEL)")
    return p


def parse_serve(argv: list[str]) -> Config:
    parser = serve_parser()
    ns = parser.parse_args(argv)
    heap_needed = 2 * ns.max_body + (1 << 20)
    if ns.heap_size < heap_needed:
        parser.error(f"--heap-size must be at least twice --max-body plus 1 MiB ({heap_needed})")
    ns.heap_size = (ns.heap_size + 4095) // 4096 * 4096
    return Config(**vars(ns))
