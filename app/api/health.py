"""``GET /healthz`` (can this worker compress?) and ``GET /device`` (what does the device look like?).

Both read the runtime's :meth:`~warp.runtime.Runtime.statistics` record, never the drivers' objects.
"""

from __future__ import annotations

from aiohttp import web

from app.device_info import describe
from app.keys import CONFIG, RUNTIME
from warp.cdev import Untrusted


async def handle_healthz(request: web.Request) -> web.Response:
    stats = request.app[RUNTIME].statistics()
    driver = next(d for d in stats.drivers if d.name == stats.driver)
    device = stats.device
    body = {
        "status": "ok",
        "driver": stats.driver,
        "device": None if device is None else {"name": device.device, "alive": device.alive},
        "fallback_jobs": stats.fallback_jobs,
        "queue_resets": stats.queue_resets,
    }
    return web.json_response(body, status=200 if driver.alive else 503)


async def handle_device(request: web.Request) -> web.Response:
    device = request.app[RUNTIME].statistics().device
    queues = [] if device is None else [
        {"sqn": q.sqn, "pasid": q.pasid, "direction": q.direction.name.lower(),
         "sq_used": q.sq_used, "pending": q.pending, "alive": q.alive}
        for q in device.per_queue]
    try:
        found = describe(request.app[CONFIG].root)
    except Untrusted:  # a root someone else planted: nothing to show (the runtime refused it too)
        found = []
    return web.json_response({"devices": found, "worker_queues": queues})
