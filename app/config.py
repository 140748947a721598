"""One typed configuration object, filled from CLI flags whose defaults come from ``WARPZIP_*``
environment variables (a flag beats the variable, the variable beats the built-in default)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, final

from app import budget
from warp import cdev, logs, options
from warp.device import ENGINES
from warp.sched import POLICIES
from warp.tool.units import parse_size
from warp.zstream import DEFAULT_MEMORY


def default_workers() -> int:
    """Half the CPUs this process may run on, at least one: the other half is left to the device's
    engines and the load balancer in front. On 2 CPUs, 1 worker served 4 KiB bodies at 20.1k req/s
    against 16.4k for 2 (BENCHMARKS.md): a second worker competes with the engines for the cores."""
    return max(1, len(os.sched_getaffinity(0)) // 2)


def default_data_dir() -> Path:
    """Where dictionaries persist unless ``--data-dir`` says otherwise: the XDG data directory of the
    user the service runs as (``~/.local/share/warpzip``), shared by its workers and its restarts."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "warpzip"


@final
@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 8080
    root: Path = cdev.default_root()
    workers: int = default_workers()
    device: str = "embedded"  # embedded | external | none
    engines: int = ENGINES
    queues: int = 2
    sched: str = "least-loaded"
    max_body: int = 64 << 20
    stream_above: int = 4 << 20
    max_stream: int = 0  # 0: unlimited
    stream_memory: int = DEFAULT_MEMORY  # the device's and the library's default too
    max_pending: int = 1024
    max_connections: int = 1000
    heap_size: int = 1 << 30
    shutdown_timeout: float = 10.0
    job_timeout: float = 30.0
    body_timeout: float = 30.0
    header_timeout: float = 10.0
    keepalive_timeout: float = 75.0
    access_log: bool = False
    log_level: str = "INFO"
    log_format: str = "text"
    forwarded_allow_ips: str = "127.0.0.1,::1"
    # Trained zstd dictionaries (app.dictstore).
    data_dir: Path = default_data_dir()
    max_dictionaries: int = 64
    max_dictionary_size: int = 1 << 20

    @property
    def stream_threshold(self) -> int:
        """Bodies larger than this stream (:mod:`app.api.streams`): ``--stream-above``, or ``--max-body``
        when that is smaller, so that no body size is refused that a larger one would not be."""
        return min(self.stream_above, self.max_body)

    @property
    def trusted_proxies(self) -> frozenset[str]:
        """The addresses whose ``X-Forwarded-For`` the access log believes (``*``: any)."""
        return frozenset(part.strip() for part in self.forwarded_allow_ips.split(",") if part.strip())


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad value is one clear line and exit status 2 (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


_integer = options.integer
_size = options.parser(parse_size, "a size")  # bytes with an optional binary suffix: 1048576, 64k, 64KiB, 1M, 1GiB
_number = options.parser(float, "a number of seconds")


def _limit(text: str) -> int:
    """A size, or 0 for no limit."""
    return 0 if text.strip() == "0" else _size(text)


def _positive(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def _port(text: str) -> int:
    value = _integer(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text!r}")
    return value


def _seconds(text: str) -> float:
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text!r} (1/0, true/false, yes/no, on/off)")


def _level(text: str) -> str:
    return text.upper()


#: Every serve option: (field of Config, value parser, choices, help). The flag is ``--field``
#: with dashes and the variable ``WARPZIP_FIELD``, so the two can never disagree.
OPTIONS: tuple[tuple[str, Callable[[str], object], tuple[str, ...] | None, str], ...] = (
    ("host", str, None, "address to listen on"),
    ("port", _port, None, "TCP port"),
    ("root", Path, None, "runtime root holding sys/ and dev/ of the device"),
    ("workers", _positive, None, "HTTP worker processes sharing the port"),
    ("device", str, ("embedded", "external", "none"),
     "embedded: start a device (and restart it if it dies); external: use one already running under "
     "--root; none: cpu driver only"),
    ("engines", _positive, None, "engines per pool (compression, decompression) of the embedded device; "
     "WARPZIP_COMP_ENGINES / WARPZIP_DECOMP_ENGINES size one pool on its own"),
    ("queues", _positive, None, "hardware queues per worker and direction"),
    ("sched", str, tuple(POLICIES), "which queue a job goes to: the least loaded (measured fastest, BENCHMARKS.md), "
     "round-robin per job, or per session as UADK's wd_sched (a request's session keeps the queue it was given)"),
    ("max_body", _size, None, "largest request body (bytes, or with a suffix: 64M, 1GiB)"),
    ("stream_above", _size, None, "bodies larger than this (or than --max-body) are compressed as they arrive and "
     "the response streams back; smaller ones are held whole"),
    ("max_stream", _limit, None, "largest streamed body, and decompressed output of a stream (0: unlimited)"),
    ("stream_memory", _size, None, "memory stream contexts may hold together — in the embedded device, and in each "
     "worker when it runs on the cpu — each charged zstd's estimate (~3.5 MiB at level 3, ~90 MiB at 19, ~830 MiB "
     "at 22); a stream past it gets 503"),
    ("max_pending", _positive, None, "requests in progress per worker before 503"),
    ("max_connections", _positive, None, "open connections per worker before a new one gets 503"),
    ("heap_size", _size, None, "SVA heap per worker (bytes, or 512M, 1G)"),
    ("shutdown_timeout", _seconds, None, "seconds to finish in-flight requests on SIGTERM"),
    ("header_timeout", _seconds, None, "seconds a client may take to send a request head (line and headers) "
     "before a 408"),
    ("body_timeout", _seconds, None, "seconds a client may take to send its body before a 408"),
    ("keepalive_timeout", _seconds, None, "seconds a kept-alive connection may stay idle between requests"),
    ("job_timeout", _seconds, None, "seconds a job may take: past it on the device the worker resets its "
     "queues and re-runs their jobs on the cpu; past it on the cpu the request gets 503"),
    ("access_log", _bool, None, "log every request (off by default, as gunicorn: a log line costs a sixth of a "
     "small request; Prometheus has the request counts and latencies)"),
    ("log_level", _level, ("DEBUG", "INFO", "WARNING", "ERROR"), "logging threshold (any case)"),
    ("log_format", str, logs.FORMATS, "log lines as text, or one JSON object per line (the device's too)"),
    ("forwarded_allow_ips", str, None, "comma-separated proxy addresses whose X-Forwarded-For the access log "
     "believes ('*': any; '': none)"),
    ("data_dir", Path, None, "directory where trained dictionaries persist (created on the first POST /dictionaries)"),
    ("max_dictionaries", _positive, None, "dictionaries the service keeps before POST /dictionaries gets 409"),
    ("max_dictionary_size", _size, None, "largest dictionary POST /dictionaries?size= may ask for"),
)


def serve_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The parser of ``warpzip serve``, its defaults taken from ``WARPZIP_*`` in ``environ``; a bad
    variable is an error that names the variable, not the flag."""
    env = os.environ if environ is None else environ
    defaults = Config()
    p = _Parser(prog="warpzip serve", description="Serve POST /compress on the simulated accelerator. "
                "Every flag can also be set with the WARPZIP_<FLAG> environment variable "
                "(for example WARPZIP_PORT=8081, WARPZIP_MAX_BODY=64M).")
    for field, kind, choices, text in OPTIONS:
        flag = "--" + field.replace("_", "-")
        variable = options.variable(flag)
        default = options.env_default(p, flag, kind, getattr(defaults, field), choices, env)
        if kind is _bool:  # --access-log, --access-log 1|0, --no-access-log
            p.add_argument(flag, type=kind, nargs="?", const=True, default=default,
                           help=f"{text} (--no-{flag[2:]} turns it off; {variable}; default %(default)s)")
            p.add_argument(f"--no-{flag[2:]}", dest=field, action="store_false", help=argparse.SUPPRESS)
        else:
            p.add_argument(flag, type=kind, choices=choices, default=default,
                           help=f"{text} ({variable}; default %(default)s)")
    return p


def parse_serve(argv: list[str], environ: Mapping[str, str] | None = None) -> Config:
    parser = serve_parser(environ)
    ns = parser.parse_args(argv)
    ns.heap_size = (ns.heap_size + 4095) // 4096 * 4096
    if not budget.fits(ns.heap_size, ns.max_body):
        parser.error(f"--heap-size {ns.heap_size} cannot hold one --max-body {ns.max_body} request and its "
                     f"output in power-of-two blocks (chunked bodies grow by doubling); use at least "
                     f"{budget.smallest_heap(ns.max_body)}")
    return Config(**vars(ns))
