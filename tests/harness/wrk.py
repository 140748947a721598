"""wrk as the tests drive it: the bench's bench/post.lua wrapped by checked.lua, which checks every
response (see there) and prints the counts beside the bench's own result line."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench import wrk as bench_wrk

CHECKED_SCRIPT = Path(__file__).resolve().with_name("checked.lua")
CHECKED_PREFIX = "CHECKED "


@dataclass(frozen=True)
class WrkResult:
    requests: int  # responses wrk read
    non2xx: int  # of which status >= 400
    connect: int  # socket errors, by kind (not requests)
    read: int
    write: int
    timeout: int
    ok: int  # 200s that were a zstd frame of the body sent
    unavailable: int  # 503s with Retry-After
    bad: int  # every other response
    output: str  # wrk's stdout, for the failure message


def start_wrk(wrk: str, url: str, body: Path, seconds: int, connections: int = 32,
              socket_timeout: int = 5) -> subprocess.Popen[str]:
    """wrk POSTing ``body`` to ``url`` from one thread for ``seconds``; see :func:`finish`."""
    env = bench_wrk.body_env([body]) | {"WRK_BENCH_SCRIPT": str(bench_wrk.LUA_SCRIPT)}
    argv = [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", f"{socket_timeout}s",
            "-s", str(CHECKED_SCRIPT), url]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish(proc: subprocess.Popen[str], timeout: float) -> WrkResult:
    """Waits for a wrk from :func:`start_wrk` and reads both of its result lines."""
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    bench = bench_wrk.parse_output(out)
    [line] = [line for line in out.splitlines() if line.startswith(CHECKED_PREFIX)]
    checked = json.loads(line.removeprefix(CHECKED_PREFIX))
    return WrkResult(bench.requests, bench.non2xx, checked["connect"], checked["read"], checked["write"],
                     checked["timeout"], checked["ok"], checked["unavailable"], checked["bad"], out)


def run_wrk(wrk: str, url: str, body: Path, seconds: int, connections: int = 32,
            socket_timeout: int = 5) -> WrkResult:
    """:func:`start_wrk` and :func:`finish` in one."""
    return finish(start_wrk(wrk, url, body, seconds, connections, socket_timeout), seconds + 30)
