"""Application factory and process model.

``create_app`` builds one worker's aiohttp application; the runtime (SVA heap, queues) is opened in
a ``cleanup_ctx`` so it exists exactly while the app runs and is put back (PUT_Q) after in-flight
requests finished. ``serve`` starts the embedded device (and restarts it if it dies, see
``app.supervisor``), then runs the workers on one listening socket it bound first: in-process for
one, forked processes inheriting the socket for several — each with its own address space, PASID
and queues on the one device, and each replaced if it dies.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import uvloop
from aiohttp import web

from app import api, logs
from app.admission import Admission
from app.api import errors
from app.budget import Bodies
from app.config import Config
from app.connection import Runner
from app.dictionaries import WorkerDictionaries
from app.dictstore import DictionaryStore
from app.keys import ADMISSION, BODIES, CONFIG, DICTIONARIES, METRICS, RUNTIME
from app.metrics import Metrics
from app.snapshot_files import Restarts, use_shared_directory
from app.supervisor import BOOT_FAILED, DeviceSupervisor, WorkerPool
from warp import Runtime
from warp import logs as warp_logs
from warp.device.launch import DeviceStartError

log = logging.getLogger("warpzip")
BACKLOG = 1024
"""Pending connections the kernel holds (aiohttp's 128 drops SYNs when wrk opens 256 at once)."""


def create_app(config: Config) -> web.Application:
    admission = Admission(config.max_pending)
    metrics = Metrics(lambda: app.get(RUNTIME), admission, config.root, config.device)
    app = web.Application(client_max_size=config.max_body)
    app[CONFIG] = config
    app[METRICS] = metrics
    app[ADMISSION] = admission
    app[BODIES] = Bodies(config.heap_size)
    app.cleanup_ctx.append(_runtime_ctx)
    api.routes(app, lambda route, handler: metrics.instrument(route, handler, errors.guard))
    return app


async def _runtime_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    driver = "cpu" if config.device == "none" else "auto"
    runtime = await asyncio.get_running_loop().run_in_executor(None, lambda: Runtime(
        config.root, driver=driver, queues=config.queues, heap_size=config.heap_size, timeout=config.job_timeout,
        sched=config.sched, stream_memory=config.stream_memory))
    app[RUNTIME] = runtime
    app[DICTIONARIES] = app[METRICS].dictionaries = _dictionaries(config, runtime)
    if config.device != "none" and runtime.zip is None:
        log.warning("no accelerator under %s (%s); compressing on the cpu driver", config.root,
                    runtime.device_error or "none found")
    sync = asyncio.create_task(app[METRICS].sync_forever())
    yield
    sync.cancel()
    runtime.close()


def _dictionaries(config: Config, runtime: Runtime) -> WorkerDictionaries:
    """The store every worker reads, and this worker's loaded copies; a copy replaced under a
    request is freed past the longest the request may still need it: its body may still be arriving
    (the session is chosen from the head), then the job may run out the device's timeout and the cpu's."""
    store = DictionaryStore(config.data_dir, config.max_dictionaries)
    return WorkerDictionaries(store, runtime, grace=config.body_timeout + 2 * config.job_timeout + 1)


async def _run_worker(config: Config, listener: socket.socket) -> int:
    app = create_app(config)
    runner = Runner(app, config, logs.ACCESS if config.access_log else None)
    try:
        await runner.setup()
        await web.SockSite(runner, listener, backlog=BACKLOG).start()
    except Exception as exc:  # the heap cannot be mapped...: forking again would not help
        log.error("worker %d cannot serve on %s:%d: %r", os.getpid(), config.host, config.port, exc)
        await runner.cleanup()
        return BOOT_FAILED
    # Everything alive now (modules, the app, the runtime, numpy) lives as long as the worker: out
    # of the collector's sight, a full collection scans only what requests left behind. Without
    # it, full collections of the start-up heap were the 4 KiB tail (p99 6.3-7.8 ms against
    # 2.5-3.2 ms with it, A/B in BENCHMARKS.md).
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("worker %d stopping: finishing in-flight requests (up to %.0f s)", os.getpid(), config.shutdown_timeout)
    await runner.cleanup()
    return 0


def run_worker(config: Config, listener: socket.socket) -> int:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_run_worker(config, listener))


def listen(config: Config) -> socket.socket:
    """The service's one listening socket, bound before any worker starts and inherited by each
    (gunicorn's way). No SO_REUSEPORT: a second server on a port in use fails here with "address
    already in use" instead of silently taking half of the first one's connections."""
    family, kind, proto, _name, address = socket.getaddrinfo(config.host, config.port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart may bind past TIME_WAIT
        sock.bind(address)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def url(config: Config) -> str:
    """The address to tell the operator, as a browser or curl takes it (an IPv6 host in brackets)."""
    host = f"[{config.host}]" if ":" in config.host else config.host
    return f"http://{host}:{config.port}"


def _device_line(config: Config) -> str:
    if config.device == "embedded":
        return f"embedded device, {config.engines} engines"
    if config.device == "external":
        return "external device"
    return "no device: the cpu driver only"


def serve(config: Config) -> int:
    warp_logs.configure(config.log_level, config.log_format)
    metrics_dir = Path(tempfile.mkdtemp(prefix="warpzip-metrics-"))
    use_shared_directory(metrics_dir)
    try:
        return _serve_with_device(config)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _serve_with_device(config: Config) -> int:
    try:
        listener = listen(config)
    except OSError as exc:
        log.error("cannot serve on %s:%d: %s", config.host, config.port, exc.strerror or exc)
        return BOOT_FAILED
    with listener:
        return _serve_on(config, listener)


def _serve_on(config: Config, listener: socket.socket) -> int:
    # What a crash left of a dictionary write, removed before any worker starts: a worker that
    # swept would remove another's write in progress.
    DictionaryStore(config.data_dir, config.max_dictionaries).sweep()
    device: DeviceSupervisor | None = None
    restarts = Restarts()
    if config.device == "embedded":
        try:
            device = DeviceSupervisor(config.root, "--engines", str(config.engines), "--log-format", config.log_format,
                                      "--stream-memory", str(config.stream_memory), restarts=restarts).start()
        except DeviceStartError as exc:
            log.error("%s", exc)
            return 1
    try:
        log.info("warpzip serving on %s (%s, root %s, workers %d)", url(config), _device_line(config),
                 config.root, config.workers)
        if config.workers == 1:
            return run_worker(config, listener)
        # The parent stops listening as it stops its workers: new connections are refused then.
        return WorkerPool(config.workers, lambda: run_worker(config, listener), on_stop=listener.close,
                          restarts=restarts).run()
    finally:
        if device is not None:
            device.stop()

