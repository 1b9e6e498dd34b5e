"""`python -m bench.elasticsearch`: a count-only Elasticsearch `_bulk` receiver for `make bench`, and the
benchmark's Elasticsearch path (its log-opts and its targets).

It answers every bulk request as a cluster that indexed every item would (filter_path's shape: `{"errors":
false,"items":[{"create":{"status":201}},...]}`) and counts the documents without a Python object per line:
a body is NDJSON pairs of action and source lines, and a source line holds no raw newline (JSON escapes it),
so the documents are `body.count(b"\\n") // 2`, and every action line is a create when
`body.count(b'\\n{"create":')` (plus the first line) says the same number. Both counts run in C (bytes.count);
gzip bodies are inflated by zlib. A body that does not check out is answered 400 and counted as a protocol
error. Like bench.receiver it prints a JSON line whenever its counters changed, stamped with CLOCK_MONOTONIC:

    {"listening": 41234, "counts_in_c": true}
    {"t": 1234.567, "records": 1000000, "requests": 37, "protocol_errors": 0, "bytes": 61234567}

It keeps no documents, so it cannot see duplicates: a resend counts again (the bench's "duplicates" figure).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
import zlib

from aiohttp import web

PATH = "logbridge+es"
ACTION = b'{"create":'
ITEM = b'{"create":{"status":201}}'


def log_opts(port: int) -> list[str]:
    """The Elasticsearch output's options for the bench: its defaults (index logs-docker-<version>-<day>, 5 MiB
    bulks, ids on, no compression) with the receiver as the only host."""
    return [f"hosts=http://127.0.0.1:{port}"]


def targets(med, outage: dict, outage_label: str) -> list[dict]:
    """Issue 10's targets, on the medians of the short-line workload (`med(path, figure)`) and the outage run."""
    rows: list[dict] = []

    def add(what: str, value: float | None, limit: float, unit: str) -> None:
        rows.append({"target": what, "value": value, "limit": limit, "unit": unit,
                     "met": None if value is None else value <= limit})

    add("(issue 10) every line stored and indexed by Elasticsearch, × json-file", med(PATH, "ratio_complete"),
        1.5, "×")
    add("(issue 10) plugin CPU per 1M short lines, + Elasticsearch", med(PATH, "plugin_cpu_per_m"), 2.5, "CPU-s")
    at_end = outage.get("outage_pss_end_pct")
    if at_end:
        add(f"(issue 10) plugin PSS at the end of a {outage_label} Elasticsearch outage, % of its start",
            at_end["max"], 110, "%")
    return rows


def count_documents(body: bytes) -> int:
    """Documents in a bulk body of create + source pairs; ValueError if it is not one."""
    lines = body.count(b"\n")
    if not body.endswith(b"\n") or lines % 2:
        raise ValueError("not whole action + source pairs")
    docs = lines // 2
    if docs and (not body.startswith(ACTION) or body.count(b"\n" + ACTION) + 1 != docs):
        raise ValueError("an action line is not a create")
    return docs


def answer(docs: int) -> bytes:
    """What filter_path=errors,items.*.status,items.*.error leaves of a response where every item was created."""
    items = (ITEM + b",") * (docs - 1) + ITEM if docs else b""
    return b'{"errors":false,"items":[' + items + b"]}"


class Counter:
    def __init__(self) -> None:
        self.stats = {"records": 0, "requests": 0, "protocol_errors": 0, "bytes": 0}

    async def bulk(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self.stats["requests"] += 1
        self.stats["bytes"] += len(raw)
        try:
            if request.headers.get("Content-Encoding", "").lower() == "gzip":
                raw = zlib.decompress(raw, wbits=31)
            docs = count_documents(raw)
        except (ValueError, zlib.error) as exc:
            self.stats["protocol_errors"] += 1
            return web.json_response({"error": {"type": "illegal_argument_exception", "reason": str(exc)},
                                      "status": 400}, status=400)
        self.stats["records"] += docs
        return web.Response(body=answer(docs), content_type="application/json",
                            headers={"X-Elastic-Product": "Elasticsearch"})


async def serve(port: int, interval: float) -> None:
    counter = Counter()
    app = web.Application(client_max_size=256 << 20)
    app.router.add_post("/_bulk", counter.bulk)
    app.router.add_post("/{index}/_bulk", counter.bulk)
    # the body is inflated in bulk() (one zlib call), not by aiohttp's streaming decoder
    runner = web.AppRunner(app, access_log=None, auto_decompress=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    print(json.dumps({"listening": site._server.sockets[0].getsockname()[1], "counts_in_c": True}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    last = None
    while not stop.is_set():
        if counter.stats != last:
            last = dict(counter.stats)
            print(json.dumps({"t": time.monotonic(), **last}), flush=True)
        try:
            await asyncio.wait_for(stop.wait(), interval)
        except TimeoutError:
            pass
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.elasticsearch", description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--interval", type=float, default=0.01, help="seconds between counter checks")
    args = p.parse_args(argv)
    asyncio.run(serve(args.port, args.interval))
    return 0


if __name__ == "__main__":
    sys.exit(main())
