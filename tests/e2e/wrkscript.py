"""wrk driven from the e2e tests: a Lua script that checks every 200 is a zstd frame of the body
that was sent, and the parsing of the one line it prints."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCRIPT = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/octet-stream"
local f = assert(io.open([[{body}]], "rb"))
wrk.body = f:read("*all")
f:close()

local threads = {{}}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  bad = 0
end

-- every 200 must be a zstd frame of the 4 KiB that were sent
function response(status, headers, body)
  if status == 200 and (string.sub(body, 1, 4) ~= "\\40\\181\\47\\253"
                        or headers["X-Uncompressed-Length"] ~= "{size}") then
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local badframes = 0
  for _, t in ipairs(threads) do
    badframes = badframes + t:get("bad")
  end
  local e = summary.errors
  io.write(string.format("non2xx=%d requests=%d connect=%d read=%d write=%d timeout=%d badframes=%d\\n",
                         e.status, summary.requests, e.connect, e.read, e.write, e.timeout, badframes))
end
"""


@dataclass(frozen=True)
class WrkResult:
    non2xx: int
    requests: int
    connect: int
    read: int
    write: int
    timeout: int
    badframes: int
    output: str


def run_wrk(wrk: str, url: str, body: Path, script_dir: Path, seconds: int, connections: int = 32,
            background: bool = False) -> WrkResult | subprocess.Popen[str]:
    """Run wrk POSTing ``body``; with ``background`` return the process (see :func:`finish`)."""
    script = script_dir / "post.lua"
    script.write_text(SCRIPT.format(body=body, size=body.stat().st_size))
    argv = [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "-s", str(script), url]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc if background else finish(proc, seconds + 30)


def finish(proc: subprocess.Popen[str], timeout: float) -> WrkResult:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    match = re.search(r"non2xx=(\d+) requests=(\d+) connect=(\d+) read=(\d+) write=(\d+) timeout=(\d+) "
                      r"badframes=(\d+)", out)
    assert match, out + err
    return WrkResult(*map(int, match.groups()), output=out)
