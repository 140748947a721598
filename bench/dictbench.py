"""``python -m bench --dictionary``: warpzip with a trained dictionary against without, on JSON events.

One warpzip server (embedded device, default flags, its own ``--data-dir``) gets a dictionary
trained on ``SAMPLES`` generated API events (:mod:`bench.events`, not the Silesia corpus: the
bodies a dictionary is for), then a fresh set of events of the same size is sent, first to
``/compress?level=L``, then to ``/compress?level=L&dict=<id>``, under the same wrk load. The report
has, for each, the compression ratio (body bytes over frame bytes, measured once per body before
wrk runs, the dictionary frames checked against the dictionary's bytes from ``GET /dictionaries``)
and the throughput and latency.
"""

from __future__ import annotations

import http.client
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import zstandard

from bench import wrk
from bench.events import events, multipart
from bench.report import Role
from bench.server import HOST, SERVERS, RunningServer, ServerFailed, ServerSpec, post
from warp.tool.units import human_size

SAMPLES: Final = 300
BODIES: Final = 64
#: The plain warpzip server, with a data directory of this run's own.
SPEC: Final = ServerSpec("warpzip-dict", lambda port, scratch: [
    *SERVERS["warpzip"].argv(port, scratch), "--data-dir", str(scratch / "data")], Role.WARPZIP)


@dataclass(frozen=True)
class Variant:
    """One row: what was sent where, the ratio, and wrk's measurement."""

    label: str
    ratio: float
    result: wrk.WrkResult


def _request(port: int, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(HOST, port, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def train(port: int, size: int) -> tuple[int, bytes]:
    """Upload ``SAMPLES`` events of ``size`` bytes; the dictionary's id and bytes."""
    body, content_type = multipart(events(SAMPLES, size, seed=1))
    status, answer = _request(port, "POST", "/dictionaries", body, {"Content-Type": content_type})
    if status != 201:
        raise ServerFailed(f"POST /dictionaries: HTTP {status}: {answer[:200]!r}")
    dict_id = int(json.loads(answer)["id"])
    return dict_id, _request(port, "GET", f"/dictionaries/{dict_id}")[1]


def ratio(port: int, path: str, bodies: list[bytes], check: zstandard.ZstdDecompressor) -> float:
    """Body bytes over frame bytes for ``path``; every frame must decode (with ``check``) to its body."""
    produced = 0
    for body in bodies:
        status, frame = post(port, path, body)
        if status != 200 or check.decompress(frame) != body:
            raise ServerFailed(f"{path}: wrong answer (HTTP {status}) for a {len(body)}-byte body")
        produced += len(frame)
    return sum(map(len, bodies)) / produced


def measure(scratch: Path, size: int, level: int, connections: int, duration_s: int, warmup_s: int) -> list[Variant]:
    bodies = events(BODIES, size, seed=2)
    paths = []
    for i, body in enumerate(bodies):
        paths.append(scratch / f"event-{size}-{i}.json")
        paths[-1].write_bytes(body)
    rows = []
    with RunningServer(SPEC, scratch) as server:
        server.wait_ready()
        dict_id, data = train(server.port, size)
        check = zstandard.ZstdDecompressor(dict_data=zstandard.ZstdCompressionDict(data))
        named = f"dictionary {dict_id} ({human_size(len(data))})"
        for label, path in (("no dictionary", f"/compress?level={level}"),
                            (named, f"/compress?level={level}&dict={dict_id}")):
            measured = ratio(server.port, path, bodies, check)
            requests = [(path, body) for body in paths]
            url = f"http://{HOST}:{server.port}{path}"
            try:
                if warmup_s:
                    wrk.run_requests(url, connections, warmup_s, requests)
                result = wrk.run_requests(url, connections, duration_s, requests)
            except (RuntimeError, ValueError, subprocess.TimeoutExpired) as error:
                raise ServerFailed(f"wrk: {error}") from None
            server.ensure_alive()
            rows.append(Variant(label, measured, result))
    return rows


def render(rows: list[Variant], size: int, level: int, connections: int, duration_s: int) -> str:
    lines = [f"## Dictionary vs none: {human_size(size)} JSON events, level {level}, {connections} connections, "
             f"{duration_s} s", "",
             f"Dictionary trained by the server on {SAMPLES} generated events (bench/events.py, seed 1); "
             f"{BODIES} other events (seed 2) sent round-robin.", "",
             "| variant | ratio | req/s | p50 ms | p99 ms | non-2xx |", "|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        r = row.result
        lines.append(f"| {row.label} | {row.ratio:.2f} | {r.ok_per_second:,.0f} | {r.p50_us / 1000:.2f} | "
                     f"{r.p99_us / 1000:.2f} | {r.non2xx} |")
    if len(rows) == 2:
        lines += ["", f"Ratio with the dictionary: {rows[1].ratio / rows[0].ratio:.2f}x the ratio without; "
                  f"throughput {rows[1].result.ok_per_second / rows[0].result.ok_per_second:.2f}x."]
    return "\n".join(lines) + "\n"
