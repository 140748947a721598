"""``GET /healthz`` (can this worker compress?) and ``GET /device`` (what does the device look like?)."""

from __future__ import annotations

from aiohttp import web

from app.inspect import describe
from app.keys import CONFIG, RUNTIME
from warp.cdev import Untrusted


async def handle_healthz(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    driver = runtime.driver
    device = runtime.zip
    body = {
        "status": "ok",
        "driver": driver.name,
        "device": None if device is None else {"name": device.device.name, "alive": device.alive},
        "fallback_jobs": runtime.fallback_jobs,
        "queue_resets": runtime.queue_resets,
    }
    return web.json_response(body, status=200 if driver.alive else 503)


async def handle_device(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    queues = [] if runtime.zip is None else [
        {"sqn": q.handle.sqn, "pasid": q.handle.pasid, "direction": q.direction.name.lower(),
         "sq_used": q.sq.used, "pending": len(q.pending), "alive": q.alive}
        for q in runtime.zip.all_queues()]
    try:
        found = describe(request.app[CONFIG].root)
    except Untrusted:  # a root someone else planted: nothing to show (the runtime refused it too)
        found = []
    return web.json_response({"devices": found, "worker_queues": queues})
