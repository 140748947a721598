"""wrk driven from the e2e, observability and deploy tests: a Lua script that checks every 200 is a
zstd frame of the body that was sent and counts the 503s that carry ``Retry-After`` (the only error
a client may get, from the service or from the load balancer in front of it), and the parsing of
the one line it prints. Header names are compared lower-cased: HAProxy lower-cases them."""

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
  ok = 0; unavailable = 0; bad = 0
end

-- every 200 must be a zstd frame of the body that was sent
function response(status, headers, body)
  local h = {{}}
  for name, value in pairs(headers) do h[string.lower(name)] = value end
  if status == 200 then
    if string.sub(body, 1, 4) == "\\40\\181\\47\\253" and h["x-uncompressed-length"] == "{size}" then
      ok = ok + 1
    else
      bad = bad + 1
    end
  elseif status == 503 and h["retry-after"] ~= nil then
    unavailable = unavailable + 1
  end
end

function done(summary, latency, requests)
  local n = {{ok = 0, unavailable = 0, bad = 0}}
  for _, t in ipairs(threads) do
    for k in pairs(n) do n[k] = n[k] + t:get(k) end
  end
  local e = summary.errors
  io.write(string.format("non2xx=%d requests=%d connect=%d read=%d write=%d timeout=%d badframes=%d ok=%d " ..
                         "unavailable=%d\\n", e.status, summary.requests, e.connect, e.read, e.write, e.timeout,
                         n.bad, n.ok, n.unavailable))
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
    badframes: int  # 200s that were not the frame of the body sent
    ok: int  # 200s that were
    unavailable: int  # 503s with Retry-After
    output: str


def run_wrk(wrk: str, url: str, body: Path, script_dir: Path, seconds: int, connections: int = 32,
            background: bool = False, socket_timeout: int = 5) -> WrkResult | subprocess.Popen[str]:
    """Run wrk POSTing ``body``; with ``background`` return the process (see :func:`finish`)."""
    script = script_dir / "post.lua"
    script.write_text(SCRIPT.format(body=body, size=body.stat().st_size))
    argv = [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", f"{socket_timeout}s", "-s", str(script),
            url]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc if background else finish(proc, seconds + 30)


def finish(proc: subprocess.Popen[str], timeout: float) -> WrkResult:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    match = re.search(r"non2xx=(\d+) requests=(\d+) connect=(\d+) read=(\d+) write=(\d+) timeout=(\d+) "
                      r"badframes=(\d+) ok=(\d+) unavailable=(\d+)", out)
    assert match, out + err
    return WrkResult(*map(int, match.groups()), output=out)
