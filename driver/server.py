"""The service: registry, plugin API on the already-listening unix socket, metrics, retention, signals."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import resource
import signal
import socket

from aiohttp import web
from google.protobuf.internal import api_implementation

from driver import __version__, frames, logsetup, outputs, status
from driver.api import make_app
from driver.metrics import make_metrics_app
from driver.registry import Registry
from driver.settings import Settings

log = logging.getLogger("driver")


async def serve(settings: Settings, listener: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    os.makedirs(settings.log_root, mode=0o755, exist_ok=True)
    os.makedirs(settings.state_dir, mode=0o700, exist_ok=True)
    try:
        outputs.load(settings.output_modules)
    except ValueError as exc:
        log.error(str(exc))
        raise SystemExit(1) from None
    registry = Registry(settings, loop)
    await registry.restore()

    runner = web.AppRunner(make_app(registry), access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    await web.SockSite(runner, listener).start()
    metrics_runner = await _serve_metrics(settings, registry)
    status_runner = await status.serve(settings, registry)
    log.info("logbridge serving", extra={"version": __version__, "socket": settings.socket,
                                          "log_root": settings.log_root, "state_dir": settings.state_dir,
                                          "protobuf": api_implementation.Type(), "speedups": frames.SPEEDUPS,
                                          "outputs": [o.name for o in outputs.available()]})
    if api_implementation.Type() != "upb":
        log.warning("protobuf runs its pure-Python parser: decoding frames is several times slower")
    if not frames.SPEEDUPS:
        log.warning("driver._speedups is not in use: decoding and encoding lines take several times the CPU")

    sweeper = loop.create_task(registry.sweep_forever(settings.retention_interval))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: flushing and saving cursors")
    sweeper.cancel()
    await runner.cleanup()
    if metrics_runner is not None:
        await metrics_runner.cleanup()
    await status.stop_serving(status_runner, settings)
    await registry.shutdown()
    log.info("stopped")


async def _serve_metrics(settings: Settings, registry: Registry) -> web.AppRunner | None:
    if not settings.metrics_addr:
        return None
    host, _, port = settings.metrics_addr.rpartition(":")
    runner = web.AppRunner(
        make_metrics_app(registry), access_log=None, handle_signals=False, shutdown_timeout=1.0
    )
    await runner.setup()
    await web.TCPSite(runner, host or "0.0.0.0", int(port)).start()
    log.info("metrics served", extra={"addr": settings.metrics_addr})
    return runner


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
# Blocks this large and more come straight from mmap and go back when freed. 128 KiB (the first setting) put every
# batch's buffers there (a journal read, the packed frames, the joined json.log lines): each one page-faulted in,
# zeroed and unmapped again, 37% of the plugin's CPU on 40 KB lines (perf). 4 MiB keeps them in malloc's heaps,
# where the next batch reuses them, and still above any one batch (measured: 100 containers' PSS peak 78 MB).
MMAP_THRESHOLD = 4 << 20


def _keep_malloc_small() -> None:
    """A fixed mmap threshold, so the plugin's heaps stay at its working size.

    glibc raises its mmap threshold to the size of each large block freed (up to 32 MiB), after which such blocks
    come from the worker threads' arenas and stay there: 100 containers at once held 1.6 GB after their burst. Fixed,
    it never rises above the largest batch buffer (measured: 100 MB peak with 128 KiB, 78 MB with 4 MiB)."""
    try:
        ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    except (OSError, AttributeError):  # not glibc
        pass


# Open fds per container with forward on: FIFO, journal segment, two cursor slots, json.log, the connection, and
# one while a cursor or state file is rewritten (measured: 7).
FDS_PER_CONTAINER = 8


def _raise_fd_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard one, as Go programs do at start: a legacy plugin under systemd gets a
    soft limit of 1024, about 120 containers, and each one past it would fail its StartLogging with EMFILE."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError) as exc:
        log.warning("could not raise the open-file limit", extra={"error": str(exc)})
        return
    now = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    limit = "unlimited" if now == resource.RLIM_INFINITY else now
    log.info("open-file limit", extra={"nofile": limit, "was": soft, "containers": (
        "unlimited" if now == resource.RLIM_INFINITY else now // FDS_PER_CONTAINER)})


def run(settings: Settings, listener: socket.socket) -> None:
    _keep_malloc_small()
    logsetup.setup(settings.log_level)
    _raise_fd_limit()
    asyncio.run(serve(settings, listener))
