"""``GET /``: a short index of the API, so a curious operator with curl finds their way."""

from __future__ import annotations

from aiohttp import web

INDEX = """warpzip - zstd compression on a (simulated) uacce accelerator

POST /compress?level=N&checksum=0|1   body -> one zstd frame (level -7..22, default 3)
POST /decompress                      zstd frame(s) -> original bytes
GET  /healthz                         200 when the service can compress, JSON with the device state
GET  /device                          JSON view of the device, queues and PASIDs
GET  /metrics                         Prometheus metrics
GET  /problems                        what each error type means (every GET also answers HEAD)

example: curl --data-binary @file http://HOST/compress | zstd -d
"""


async def handle(request: web.Request) -> web.Response:
    return web.Response(text=INDEX.replace("HOST", request.host))
