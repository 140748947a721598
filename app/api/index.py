"""``GET /``: a short index of the API, so a curious operator with curl finds their way."""

from __future__ import annotations

from aiohttp import web

INDEX = """warpzip - zstd compression on a (simulated) uacce accelerator

POST /compress?level=N&checksum=0|1   body -> one zstd frame (level -7..22, default 3)
POST /compress?...&dict=ID            the same with trained dictionary ID
POST /compress?...&alg=lz77_zstd      the same format, ZIP's way: engines find matches, host codes the frame
POST /decompress                      zstd frame(s) -> original bytes (a frame names its dictionary)
POST /dictionaries?size=BYTES         multipart samples, one per part -> 201, a trained dictionary's id
GET  /dictionaries[/ID]               the list; a dictionary's bytes (for zstd -D); DELETE retires one
GET  /healthz                         200 when the service can compress, JSON with the device state
GET  /device                          JSON view of the device, queues and PASIDs
GET  /metrics                         Prometheus metrics
GET  /problems                        what each error type means (every GET also answers HEAD)

example: curl --data-binary @file http://HOST/compress | zstd -d
"""


async def handle(request: web.Request) -> web.Response:
    return web.Response(text=INDEX.replace("HOST", request.host))
