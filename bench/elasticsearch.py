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


def count_documents(body, length: int | None = None) -> int:
    """Documents in a bulk body of create + source pairs (``body[:length]``: a buffer kept per connection);
    ValueError if it is not one."""
    end = len(body) if length is None else length
    lines = body.count(b"\n", 0, end)
    if not body.endswith(b"\n", 0, end) or lines % 2:
        raise ValueError("not whole action + source pairs")
    docs = lines // 2
    if docs and (not body.startswith(ACTION, 0, end) or body.count(b"\n" + ACTION, 0, end) + 1 != docs):
        raise ValueError("an action line is not a create")
    return docs


def answer(docs: int) -> bytes:
    """What filter_path=errors,items.*.status,items.*.error leaves of a response where every item was created."""
    items = (ITEM + b",") * (docs - 1) + ITEM if docs else b""
    return b'{"errors":false,"items":[' + items + b"]}"


MAX_HEAD = 64 << 10  # request line and headers
MAX_BODY = 256 << 20


class Counter:
    def __init__(self) -> None:
        self.stats = {"records": 0, "requests": 0, "protocol_errors": 0, "bytes": 0}

    def bulk(self, body, length: int, gzipped: bool) -> tuple[int, bytes]:
        """(status, JSON answer) for a bulk body held in ``body[:length]``."""
        self.stats["requests"] += 1
        self.stats["bytes"] += length
        try:
            if gzipped:
                body = zlib.decompress(memoryview(body)[:length], wbits=31)
                length = len(body)
            docs = count_documents(body, length)
        except (ValueError, zlib.error) as exc:
            self.stats["protocol_errors"] += 1
            return 400, json.dumps({"error": {"type": "illegal_argument_exception", "reason": str(exc)},
                                    "status": 400}).encode()
        self.stats["records"] += docs
        return 200, answer(docs)


class BulkProtocol(asyncio.BufferedProtocol):
    """One keep-alive HTTP/1.1 connection: ``POST /_bulk`` (or ``/<index>/_bulk``) with a Content-Length body.

    The body is received straight into one buffer kept for the connection (no chunk list, no copy), so the
    receiver's CPU per document is the kernel's copy and two ``bytes.count``: aiohttp's server cost about as much
    CPU per document as the plugin's whole output, and on a 2-core machine that is part of the time measured."""

    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self.transport: asyncio.Transport | None = None
        self.head = bytearray(MAX_HEAD)
        self.have = 0  # bytes of head in self.head
        self.body = bytearray()
        self.length = -1  # the body's Content-Length; -1: reading the head
        self.got = 0
        self.gzipped = False
        self.close_after = False
        self.found = True  # the request's path is a bulk endpoint

    def connection_made(self, transport) -> None:
        self.transport = transport

    def get_buffer(self, sizehint: int):
        if self.length >= 0:
            return memoryview(self.body)[self.got:self.length]
        return memoryview(self.head)[self.have:]

    def buffer_updated(self, nbytes: int) -> None:
        if self.length >= 0:
            self.got += nbytes
            if self.got == self.length:
                self._answer()
            return
        self.have += nbytes
        self._parse_heads()

    def _parse_heads(self) -> None:
        """Requests whose head is in self.head (a body that followed it is moved to the body buffer)."""
        while self.length < 0:
            end = self.head.find(b"\r\n\r\n", 0, self.have)
            if end < 0:
                if self.have == len(self.head):
                    self._fail(431, "request head too large")
                return
            lines = bytes(self.head[:end]).decode("latin-1").split("\r\n")
            rest = self.head[end + 4:self.have]
            method, _, target = lines[0].partition(" ")
            path = target.partition(" ")[0].partition("?")[0]
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if "transfer-encoding" in headers:
                return self._fail(411, "a Content-Length body is required")
            try:
                length = int(headers.get("content-length", "0"))
            except ValueError:
                return self._fail(400, "bad Content-Length")
            if not 0 <= length <= MAX_BODY:
                return self._fail(413, "body too large")
            self.found = method == "POST" and (path == "/_bulk" or (path.endswith("/_bulk") and path.count("/") == 2))
            self.gzipped = headers.get("content-encoding", "").lower() == "gzip"
            self.close_after = headers.get("connection", "").lower() == "close"
            if len(self.body) < length:
                self.body = bytearray(length)
            taken = min(len(rest), length)
            self.body[:taken] = rest[:taken]
            left = rest[taken:]
            self.head[:len(left)] = left
            self.have = len(left)
            self.length, self.got = length, taken
            if self.got == self.length:
                self._answer()

    def _answer(self) -> None:
        if self.found:
            status, payload = self.counter.bulk(self.body, self.length, self.gzipped)
        else:
            status, payload = 404, b'{"error":"no handler","status":404}'
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}[status]
        self.transport.write(b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nX-Elastic-Product: "
                             b"Elasticsearch\r\nContent-Length: %d\r\n\r\n" % (status, reason.encode(), len(payload))
                             + payload)
        self.length = -1
        if self.close_after:
            self.transport.close()
        elif self.have:
            self._parse_heads()  # a pipelined request's head came with this body

    def _fail(self, status: int, why: str) -> None:
        self.counter.stats["protocol_errors"] += 1
        payload = json.dumps({"error": why, "status": status}).encode()
        self.transport.write(b"HTTP/1.1 %d Error\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                             % (status, len(payload)) + payload)
        self.transport.close()
        self.length = 0  # read nothing more


async def serve(port: int, interval: float) -> None:
    counter = Counter()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: BulkProtocol(counter), "127.0.0.1", port)
    print(json.dumps({"listening": server.sockets[0].getsockname()[1], "counts_in_c": True}), flush=True)
    stop = asyncio.Event()
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
    server.close()
    await server.wait_closed()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.elasticsearch", description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--interval", type=float, default=0.01, help="seconds between counter checks")
    args = p.parse_args(argv)
    asyncio.run(serve(args.port, args.interval))
    return 0


if __name__ == "__main__":
    sys.exit(main())
