"""Running wrk with ``post.lua`` and reading the one JSON line its ``done()`` prints.

The lua script prints its own machine-readable line because wrk's human summary rounds numbers and
changes units with their size ("1.2k", "3.4ms").
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

LUA_SCRIPT = Path(__file__).resolve().with_name("post.lua")
JSON_PREFIX = "JSON "
SOCKET_TIMEOUT = "10s"
"""wrk's default 2 s would count slow 1 MiB responses at high concurrency as errors."""


@dataclass(frozen=True)
class WrkResult:
    """One wrk run as ``post.lua`` reports it (times in microseconds)."""

    requests: int
    duration_us: int
    non2xx: int
    errors: int
    p50_us: int
    p90_us: int
    p99_us: int
    bytes: int

    @property
    def ok_per_second(self) -> float:
        """Successful responses per second: a server that fails fast must not look fast.

        wrk counts statuses ≥ 400 in ``non2xx`` and socket errors (which are not requests) apart.
        """
        return (self.requests - self.non2xx) / (self.duration_us / 1e6) if self.duration_us else 0.0


def parse_output(stdout: str) -> WrkResult:
    """Finds the ``JSON {...}`` line in wrk's output; ``ValueError`` if it is absent or malformed."""
    for line in stdout.splitlines():
        if line.startswith(JSON_PREFIX):
            fields = json.loads(line[len(JSON_PREFIX) :])
            try:
                return WrkResult(**{name: int(fields[name]) for name in WrkResult.__dataclass_fields__})
            except KeyError as missing:
                raise ValueError(f"wrk JSON line lacks {missing}: {line!r}") from None
    raise ValueError("wrk printed no JSON line (is bench/post.lua the script?)")


def command(url: str, connections: int, duration_s: int) -> list[str]:
    """The wrk command line: one thread, as the peers' published figures were measured."""
    return [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration_s}s",
        "--timeout",
        SOCKET_TIMEOUT,
        "--latency",
        "-s",
        str(LUA_SCRIPT),
        url,
    ]


BODY_VARIABLES = ("WRK_BODY", "WRK_BODIES", "WRK_REQUESTS")
"""What ``post.lua`` reads its bodies from; an environment sets exactly one of them."""


def body_env(bodies: list[Path]) -> dict[str, str]:
    """Environment for ``post.lua``: one body in ``WRK_BODY``, several in ``WRK_BODIES``."""
    env = _without_bodies()
    if len(bodies) == 1:
        env["WRK_BODY"] = str(bodies[0])
    else:
        env["WRK_BODIES"] = ":".join(str(path) for path in bodies)
    return env


def requests_env(requests: Sequence[tuple[str, Path]]) -> dict[str, str]:
    """Environment for ``post.lua``: bodies sent round-robin, each to its own URL path, in
    ``WRK_REQUESTS`` (one ``<url path> <body path>`` line each)."""
    return _without_bodies() | {"WRK_REQUESTS": "\n".join(f"{path} {body}" for path, body in requests)}


def _without_bodies() -> dict[str, str]:
    """This process's environment without any body variable it may have inherited."""
    return {key: value for key, value in os.environ.items() if key not in BODY_VARIABLES}


def run(url: str, connections: int, duration_s: int, bodies: list[Path]) -> WrkResult:
    """Runs wrk to completion; ``RuntimeError`` with wrk's stderr if it fails."""
    return _run(url, connections, duration_s, body_env(bodies))


def run_requests(url: str, connections: int, duration_s: int, requests: Sequence[tuple[str, Path]]) -> WrkResult:
    """:func:`run` with each body sent to its own URL path (:func:`requests_env`)."""
    return _run(url, connections, duration_s, requests_env(requests))


def _run(url: str, connections: int, duration_s: int, env: dict[str, str]) -> WrkResult:
    completed = subprocess.run(
        command(url, connections, duration_s),
        env=env,
        capture_output=True,
        text=True,
        timeout=duration_s + 60,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"wrk exited {completed.returncode}: {completed.stderr.strip()[-500:]}")
    return parse_output(completed.stdout)
