"""``python -m driver status``: one line per container with what logbridge did with its lines, from the running plugin
or, when it does not answer, from its state files (marked "as of" their last save).

The plugin answers ``GET /status`` on a unix socket in its state dir (``<state dir>/status.sock``), not on the
metrics listener: the managed plugin's state dir is a bind mount of a host directory, so the host reaches the socket
there with no METRICS_ADDR (off by default) and no TCP port, and only root can, like the state dir itself.

The command side is stdlib only (this module imports aiohttp only inside ``serve``), so it runs with the host's
``python3`` from a plain checkout, where the plugin's dependencies live only in the plugin's rootfs.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import socket
import sys
import time

from driver.settings import Settings
from driver.statedir import container_dir, container_ids, cursor_names, journal_end, read_cursor, read_info

log = logging.getLogger(__name__)

SOCKET = "status.sock"
JSONLOG = "jsonlog"  # json.log's consumer name (driver.sinks.jsonlog.NAME); every other cursor is an output's


def socket_path(state_dir: str) -> str:
    return os.path.join(state_dir, SOCKET)


# ---- figures ------------------------------------------------------------------------------------------------
def _name(info: dict, cid: str) -> str:
    return (info.get("ContainerName") or "").lstrip("/") or cid[:12]


def _nonzero(counts: dict) -> dict[str, int]:
    return {k: int(v) for k, v in sorted(counts.items()) if v}


def live_row(p) -> dict:
    """A running (or still draining) pipeline's figures (driver.pipeline.Pipeline; on the event loop)."""
    end = p.journal.end
    outputs = [{"name": JSONLOG, "backlog_bytes": max(0, end - p.jsonlog.done_pos),
                "lag_seconds": round(p.lag_seconds(JSONLOG), 3)}]
    for f in p.outputs:  # each output the container's options turned on (driver.outputs)
        outputs.append({"name": f.name, "acked": f.stats.acked, "dropped": f.cursor.dropped_frames,
                        "backlog_bytes": max(0, end - f.done_pos), "lag_seconds": round(p.lag_seconds(f.name), 3),
                        "up": f.up, "last_error": getattr(f.stats, "last_error", "") or None})
    return {"id": p.container_id[:12], "name": p.info.container_name.lstrip("/") or p.container_id[:12],
            "state": "running" if p.fifo is not None else "draining",
            "received": sum(p.stats.received_lines.values()), "stored": p.stats.lines_written,
            "dropped": _nonzero(p.stats.dropped_lines), "outputs": outputs, "as_of": None}


def saved_row(state_dir: str, cid: str) -> dict | None:
    """A container's figures as its consumers last saved them (None if it has no saved json.log cursor)."""
    cdir = container_dir(state_dir, cid)
    jsonlog = read_cursor(cdir, JSONLOG)
    if jsonlog.saved_at is None:
        return None
    info = read_info(cdir)
    stats = jsonlog.extra.get("stats", {})
    end = journal_end(cdir)
    end = jsonlog.pos if end is None else end
    outputs = [{"name": JSONLOG, "backlog_bytes": max(0, end - jsonlog.pos), "lag_seconds": None}]
    saved_at = [jsonlog.saved_at]
    # Each output saves its cursor from its start (driver.outputs.acked), so its file says it is there.
    for name in (n for n in cursor_names(cdir) if n != JSONLOG):
        cursor = read_cursor(cdir, name)
        saved_at.append(cursor.saved_at)
        outputs.append({"name": name, "acked": int(cursor.extra.get("acked", 0)), "dropped": cursor.dropped_frames,
                        "backlog_bytes": max(0, end - cursor.pos), "lag_seconds": None, "up": None,
                        "last_error": None})
    return {"id": cid[:12], "name": _name(info, cid), "state": "stopped",
            "received": sum(stats.get("received_lines", {}).values()), "stored": int(stats.get("lines_written", 0)),
            "dropped": _nonzero(stats.get("dropped_lines", {})), "outputs": outputs,
            "as_of": max(t for t in saved_at if t is not None)}


def saved_rows(state_dir: str, skip: set[str] = frozenset()) -> list[dict]:
    rows = [saved_row(state_dir, cid) for cid in container_ids(state_dir) if cid not in skip]
    return sorted((r for r in rows if r is not None), key=lambda r: r["name"])


def report_from_files(state_dir: str) -> dict:
    """What the state files say, for a plugin that does not answer."""
    rows = saved_rows(state_dir)
    for r in rows:
        r["state"] = "saved"  # running or not: the plugin is not there to say
    return {"live": False, "as_of": max((r["as_of"] for r in rows), default=None), "uptime_seconds": None,
            "containers": rows, "totals": None}


def live_report(registry, stopped: list[dict]) -> dict:
    """The running plugin's view (driver.registry.Registry; on the event loop); ``stopped``: the saved rows of the
    containers without a pipeline."""
    from driver.metrics import STARTED  # the process start the uptime metric counts from

    live = sorted((live_row(p) for p in registry.pipelines.values()), key=lambda r: r["name"])
    totals = registry.totals()
    return {"live": True, "as_of": time.time(), "uptime_seconds": round(time.time() - STARTED, 3),
            "containers": live + stopped,
            "totals": {"received": sum(totals.received_lines.values()), "stored": totals.lines_written,
                       "dropped": _nonzero(totals.dropped_lines)}}


# ---- the endpoint (in the plugin) -------------------------------------------------------------------------
async def serve(settings: Settings, registry):
    """Serve GET /status on <state dir>/status.sock; None (and a warning) if the socket cannot be made."""
    import asyncio

    from aiohttp import web

    path = socket_path(settings.state_dir)

    async def status(request: web.Request) -> web.Response:
        skip = {cid for cid in registry.pipelines}  # full ids: the state dir's folder names
        stopped = await asyncio.get_running_loop().run_in_executor(None, saved_rows, settings.state_dir, skip)
        return web.json_response(live_report(registry, stopped))

    app = web.Application()
    app.router.add_get("/status", status)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.UnixSite(runner, path).start()  # asyncio replaces a stale socket left by a killed predecessor
        os.chmod(path, 0o600)
    except OSError as exc:  # e.g. a state dir path too long for a unix socket (107 bytes)
        log.warning("status socket not served: python -m driver status reads the state files instead",
                    extra={"path": path, "error": str(exc)})
        await runner.cleanup()
        return None
    return runner


async def stop_serving(runner, settings: Settings) -> None:
    if runner is not None:
        await runner.cleanup()
        try:
            os.unlink(socket_path(settings.state_dir))  # so that `status` knows at once that nobody answers
        except FileNotFoundError:
            pass


# ---- the command ------------------------------------------------------------------------------------------
class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket, stdlib only (the tests' client uses it too)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def fetch(path: str, timeout: float = 5.0) -> dict:
    """The running plugin's report; OSError or http.client.HTTPException when it does not answer."""
    conn = UnixHTTPConnection(path, timeout)
    try:
        conn.request("GET", "/status")
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise http.client.HTTPException(f"HTTP {resp.status}: {body[:200]!r}")
        return json.loads(body)
    finally:
        conn.close()


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s // 60 % 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _dropped(counts: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in counts.items()) or "0"


def _output(o: dict) -> str:
    parts = [f"acked {o['acked']}"] if "acked" in o else []
    if o.get("dropped"):
        parts.append(f"dropped {o['dropped']}")
    parts.append(f"backlog {_size(o['backlog_bytes'])}")
    if o.get("lag_seconds") is not None:
        parts.append(f"lag {o['lag_seconds']:.1f}s")
    if o.get("up") is False:
        parts.append("DOWN")
    if o.get("last_error"):
        parts.append(f"last error: {o['last_error']}")
    return f"{'json.log' if o['name'] == JSONLOG else o['name']}: " + ", ".join(parts)


def render(report: dict, source: str) -> str:
    rows = report["containers"]
    if report["live"]:
        head = (f"logbridge: live ({source}), up {_duration(report['uptime_seconds'])}, "
                f"{sum(r['state'] != 'stopped' for r in rows)} container(s) with a pipeline")
    else:
        when = _when(report["as_of"]) if report["as_of"] else "never (no state saved)"
        head = f"logbridge: not answering ({source}); from the state files, as of {when}"
    table = [("CONTAINER", "NAME", "STATE", "RECEIVED", "STORED", "DROPPED", "OUTPUTS")]
    for r in rows:
        state = f"as of {time.strftime('%H:%M:%S', time.gmtime(r['as_of']))}" if r["state"] == "saved" else r["state"]
        table.append((r["id"], r["name"], state, str(r["received"]), str(r["stored"]), _dropped(r["dropped"]),
                      "; ".join(_output(o) for o in r["outputs"])))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    lines = [head] + ["  ".join(c.ljust(w) if i < 3 else c.rjust(w) if i < 5 else c.ljust(w)
                                for i, (c, w) in enumerate(zip(row, widths, strict=False))) + "  " + row[-1]
                      for row in table]
    totals = report.get("totals")
    if totals:
        dropped = sum(totals["dropped"].values())
        detail = f" ({_dropped(totals['dropped'])})" if dropped else ""
        lines.append(f"the plugin's totals: received {totals['received']} = stored {totals['stored']} + dropped "
                     f"{dropped}{detail}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m driver status", description=__doc__.split("\n")[0])
    parser.add_argument("--state-dir", default=Settings.from_env().state_dir,
                        help="the plugin's state dir; for the managed plugin its state-dir mount's host source "
                             "(default: LOGBRIDGE_STATE_DIR or /var/lib/logbridge)")
    parser.add_argument("--json", action="store_true", help="the report as JSON")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the plugin's answer")
    args = parser.parse_args(argv)
    path = socket_path(args.state_dir)
    try:
        report, source = fetch(path, args.timeout), path
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if not os.path.isdir(os.path.join(args.state_dir, "containers")):
            print(f"logbridge status: no plugin answers on {path} ({exc}) and {args.state_dir} holds no state: "
                  "pass --state-dir (the managed plugin's: docker plugin inspect -f '{{json .Settings.Mounts}}' "
                  "NAME)", file=sys.stderr)
            return 2
        report, source = report_from_files(args.state_dir), f"{path}: {exc}"
    print(json.dumps(report, indent=2) if args.json else render(report, source))
    return 0
