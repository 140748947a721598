"""Typed application keys (``web.AppKey``) shared by the server and the resources."""

from __future__ import annotations

from aiohttp import web

from app.admission import Admission
from app.budget import Bodies
from app.config import Config
from app.dictionaries import WorkerDictionaries
from app.metrics import Metrics
from warp import Runtime

CONFIG = web.AppKey("config", Config)
RUNTIME = web.AppKey("runtime", Runtime)
METRICS = web.AppKey("metrics", Metrics)
ADMISSION = web.AppKey("admission", Admission)
BODIES = web.AppKey("bodies", Bodies)
DICTIONARIES = web.AppKey("dictionaries", WorkerDictionaries)
