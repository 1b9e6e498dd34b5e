"""The plugin HTTP API on the unix socket: translates dockerd's calls into Registry calls, nothing more.

dockerd sends no Content-Type, sometimes an empty body, any Host; it wants a JSON body on every 200 and reports
``Err`` to the user. Requests are served concurrently (a ReadLogs stream holds its connection open).
"""

from __future__ import annotations

import json
import logging
import os
import time

from aiohttp import web

from driver.options import OptionError
from driver.readlogs import serve_read_logs
from driver.registry import Registry

log = logging.getLogger(__name__)

REGISTRY = web.AppKey("registry", Registry)


def parse_body(raw: bytes) -> dict:
    """A request body: a JSON object, {} when empty; ValueError otherwise."""
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except RecursionError:  # nesting deeper than the interpreter's stack: not a body dockerd sends
        raise ValueError("request body is nested too deeply") from None
    if not isinstance(data, dict):
        raise ValueError("request body is not a JSON object")
    return data


async def _body(request: web.Request) -> dict:
    return parse_body(await request.read())


def _reply(err: str = "") -> web.Response:
    return web.json_response({"Err": err})


async def activate(request: web.Request) -> web.Response:
    return web.json_response({"Implements": ["LogDriver"]})


async def capabilities(request: web.Request) -> web.Response:
    return web.json_response({"Cap": {"ReadLogs": True}})


async def start_logging(request: web.Request) -> web.Response:
    try:
        body = await _body(request)
        fifo = body.get("File") or ""
        if not fifo:
            return _reply("logbridge: StartLogging without a File")
        started = time.monotonic()
        await request.app[REGISTRY].start_logging(fifo, body.get("Info") or {})
        # what each container start waits for in the plugin (the scale bench's StartLogging latency)
        log.debug("StartLogging served", extra={"fifo": os.path.basename(fifo),
                                                "seconds": round(time.monotonic() - started, 4)})
    except OptionError as exc:
        log.info("StartLogging refused", extra={"error": str(exc)})
        return _reply(str(exc))
    except Exception as exc:  # noqa: BLE001 - the user must see why the container cannot start
        log.exception("StartLogging failed")
        return _reply(f"logbridge: cannot start logging: {exc}")
    return _reply()


async def stop_logging(request: web.Request) -> web.Response:
    try:
        body = await _body(request)
        request.app[REGISTRY].stop_logging(body.get("File") or "")
    except Exception:  # noqa: BLE001 - StopLogging never fails (P6): dockerd would leak the FIFO and our ref
        log.exception("StopLogging failed")
    return _reply()


async def read_logs(request: web.Request) -> web.StreamResponse:
    try:
        body = await _body(request)
        return await serve_read_logs(request, request.app[REGISTRY], body)
    except (ValueError, OSError) as exc:
        # Before the stream started: dockerd shows this text in `docker logs` ("Error grabbing logs: ...").
        return web.json_response({"Err": f"logbridge: cannot read logs: {exc}"}, status=500)


def make_app(registry: Registry) -> web.Application:
    app = web.Application()
    app[REGISTRY] = registry
    app.router.add_post("/Plugin.Activate", activate)
    app.router.add_post("/LogDriver.Capabilities", capabilities)
    app.router.add_post("/LogDriver.StartLogging", start_logging)
    app.router.add_post("/LogDriver.StopLogging", stop_logging)
    app.router.add_post("/LogDriver.ReadLogs", read_logs)
    return app
