"""Elasticsearch bulk answers, from the HTTP answer to what the batcher settles: ``Batcher._send`` over the real
``EsClient.bulk`` and ``codec.parse_bulk_response``, the session replaced by one that answers each request with
a status, a body and a Retry-After carved from the input (what the protocol-faithful receiver of
tests/support/elasticsearch.py answers with fuzzed item faults, a bulk response of fuzzed items now and then cut
short or reshaped, or any bytes), or a connection error.

Properties, per request as the client saw it: nothing raises (a body that is not a bulk answer for this request
retries it whole); a 2xx bulk answer settles each item by its own status: 2xx indexed, 409 a duplicate (counted,
not dropped), 400 with one of the document error types dropped by type, every other item kept pending for the
next round, exactly those; a 413 halves the request and drops only a single document that still does not fit;
any other status or no answer keeps every document of it pending. Every pending document goes in exactly one
answered request; the counts (indexed, duplicates, dropped, forwarded, statuses) follow, in lines; ``_send``
says False exactly when a request got no bulk answer; a Retry-After is None or finite in [0, 3600].
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter

import aiohttp
import atheris

from driver.options import parse_options
from driver.outputs.elasticsearch import codec
from driver.outputs.elasticsearch.batcher import Batcher, EsStats, Part
from driver.outputs.elasticsearch.client import EsClient
from driver.outputs.elasticsearch.options import settings_from
from driver.outputs.loki.client import MAX_RETRY_AFTER
from tests.support.elasticsearch import BulkError, Cluster, ItemFault, filter_path

from .common import Finding, same
from .loki_response import RETRY_AFTER

MAX_LEN = 1 << 13
STATUSES = [200, 200, 200, 201, 413, 413, 429, 503, 500, 400, 401, 403, 404, 302, 0]  # 0: a connection error
ITEM_STATUSES = [201, 201, 200, 409, 409, 429, 400, 400, 400, 503, 500, 404, 403, 413, 0, 299, 300]
ERROR_TYPES = [*sorted(codec.DOCUMENT_ERRORS), "version_conflict_engine_exception", "es_rejected_execution_exception",
               "cluster_block_exception", "index_not_found_exception", "unavailable_shards_exception",
               "circuit_breaking_exception", "", "MAPPER_PARSING_EXCEPTION"]
CANNED = [b"", b"{}", b"[]", b"null", b'{"errors":false}', b'{"errors":true}', b'{"errors":"false","items":[]}',
          b"<html><body>502 Bad Gateway</body></html>", b"\xef\xbb\xbf{\"errors\":false}", b"\xff\xfe{\x00}\x00",
          b'{"error":{"root_cause":[],"type":"security_exception","reason":"x"},"status":401}',
          b"[" * 3000, b'{"errors":true,"items":' + b"[" * 2500, b'{"errors":true,"items":[' + b'{"a":' * 1500,
          b'{"errors":true,"items":[{"create":{"status":1' + b"0" * 5000 + b"}}]}"]
_ID = re.compile(rb'"_id":"(\d+)"')
# What codec.parse_bulk_response documents: ES writes "errors" first; false there means no item failed.
_ERRORS_FALSE_FIRST = re.compile(rb'\s*\{\s*"errors"\s*:\s*false\s*[,}]')
CLIENT = EsClient(settings_from(parse_options({"hosts": "http://es.invalid:9200"})))
for _name in ("driver.outputs.elasticsearch.batcher", "driver.outputs.elasticsearch.client"):
    logging.getLogger(_name).propagate = False  # the warnings are built (and so fuzzed), not printed
    logging.getLogger(_name).addHandler(logging.NullHandler())


# ---- the answers --------------------------------------------------------------------------------------------
def item(fdp) -> object:
    """One bulk item as ES writes it under filter_path (status, error), or now and then a shape it never has."""
    status = fdp.PickValueInList(ITEM_STATUSES) if fdp.ConsumeIntInRange(0, 3) else fdp.ConsumeIntInRange(0, 999)
    result: dict = {"status": status}
    if status >= 300 or fdp.ConsumeIntInRange(0, 7) == 0:
        result["error"] = {"type": fdp.PickValueInList(ERROR_TYPES) if fdp.ConsumeIntInRange(0, 7)
                           else fdp.ConsumeUnicode(8), "reason": fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 40))}
    if fdp.ConsumeIntInRange(0, 3) == 0:
        result.update(_index="logs-x", _id="i", result="created")  # without filter_path (a proxy dropped it)
    op = fdp.PickValueInList(["create", "create", "index"])
    odd = fdp.ConsumeIntInRange(0, 23)
    if odd == 0:
        result["status"] = fdp.PickValueInList(["201", 201.0, True, None, [409], 2**70, -409])
    elif odd == 1:
        result["error"] = fdp.PickValueInList(["mapper_parsing_exception", ["x"], {"type": 5}, None, {}])
    elif odd == 2:
        return fdp.PickValueInList([[], {}, 5, "create", {"create": result, "index": result}, {"create": [1]}])
    elif odd == 3:
        del result["status"]
    return {op: result}


def bulk_body(fdp, count: int) -> bytes:
    items = [item(fdp) for _ in range(count + fdp.PickValueInList([0, 0, 0, 0, 0, 0, 1, -1]))]
    errors: object = fdp.ConsumeBool() if fdp.ConsumeIntInRange(0, 15) else fdp.PickValueInList(["true", 1, None])
    doc = {"errors": errors, "items": items}
    if fdp.ConsumeIntInRange(0, 3) == 0:
        doc = {"took": 3, **doc}  # without filter_path: "errors" is not the first key
    raw = json.dumps(doc, indent=fdp.PickValueInList([None, None, None, 1])).encode()
    if fdp.ConsumeIntInRange(0, 7) == 0:
        raw = raw[:fdp.ConsumeIntInRange(0, len(raw))]  # a body cut short
    return raw


def receiver_body(fdp, cluster: Cluster, data: bytes) -> bytes:
    """What the protocol-faithful receiver (tests/support/elasticsearch.py) answers to this request, filtered
    as the client asks: item faults (429, 400 by type, 5xx), 409s for what this cluster holds already, a whole
    request refused by a read-only cluster."""
    cluster.item_faults = [ItemFault(fdp.PickValueInList([429, 400, 400, 503, 500, 404]),
                                     fdp.PickValueInList(["", *sorted(codec.DOCUMENT_ERRORS)]))
                           for _ in range(fdp.ConsumeIntInRange(0, 3))]
    cluster.read_only = fdp.ConsumeIntInRange(0, 15) == 0
    try:
        return json.dumps(filter_path(cluster.bulk(data, default_index="fuzz"), codec.FILTER_PATH)).encode()
    except BulkError as exc:
        return json.dumps(exc.body()).encode()


def answer(fdp, cluster: Cluster, data: bytes, count: int) -> tuple[int, bytes, str | None]:
    status = fdp.PickValueInList(STATUSES) if fdp.ConsumeIntInRange(0, 7) else fdp.ConsumeIntInRange(100, 999)
    kind = fdp.ConsumeIntInRange(0, 7)
    body = (fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 300)) if kind == 0 else fdp.PickValueInList(CANNED)
            if kind == 1 else receiver_body(fdp, cluster, data) if kind <= 4 else bulk_body(fdp, count))
    retry_after = fdp.PickValueInList(RETRY_AFTER) if fdp.ConsumeIntInRange(0, 3) == 0 else None
    return status, body, retry_after


class _Response:
    def __init__(self, status: int, body: bytes, retry_after: str | None) -> None:
        self.status, self._body = status, body
        self.headers = {} if retry_after is None else {"Retry-After": retry_after}

    async def read(self) -> bytes:
        return self._body

    async def __aenter__(self) -> _Response:
        return self

    async def __aexit__(self, *exc) -> None:
        return None


class Session:
    """aiohttp.ClientSession's part EsClient uses; every request and what it was answered is kept."""

    closed = False

    def __init__(self, fdp) -> None:
        self.fdp = fdp
        self.cluster = Cluster()  # one per input: a split or a second request meets what the first stored
        self.requests: list[tuple[list[int], int, bytes]] = []  # (document numbers, status, body)

    def post(self, url: str, *, data, **_kwargs) -> _Response:
        data = bytes(data)  # the client hands over a BodyPieces (or gzipped bytes)
        ids = [int(m) for m in _ID.findall(data)]
        status, body, retry_after = answer(self.fdp, self.cluster, data, len(ids))
        self.requests.append((ids, status, body))
        if status == 0:
            raise self.fdp.PickValueInList([aiohttp.ClientConnectionError("refused"), TimeoutError(), OSError(104)])
        return _Response(status, body, retry_after)

    async def close(self) -> None:
        return None


# ---- the model: what each answer means, from the documented rules ----------------------------------------------
INDEXED, DUPLICATE, RETRY, SPLIT = "indexed", "duplicate", "retry", "split"


def item_fate(value: dict) -> str | tuple[str, str]:
    status, error = value["status"], value.get("error")
    error_type = str(error.get("type", "")) if isinstance(error, dict) else ""
    if 200 <= status < 300:
        return INDEXED
    if status == 409:
        return DUPLICATE
    if status == 400 and error_type in codec.DOCUMENT_ERRORS:
        return ("dropped", error_type)
    return RETRY


def meaning(status: int, body: bytes, count: int) -> tuple[bool, list]:
    """(whether the request got a bulk answer, the fate of each of its ``count`` documents; SPLIT: sent again
    in halves) for a request answered with this status (0: none) and body."""
    if status == 413:
        return True, [("dropped", codec.TOO_LARGE)] if count == 1 else [SPLIT] * count
    if not 200 <= status < 300:
        return False, [RETRY] * count
    if _ERRORS_FALSE_FIRST.match(body):
        return True, [INDEXED] * count
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return False, [RETRY] * count
    if not isinstance(doc, dict) or not isinstance(doc.get("errors"), bool):
        return False, [RETRY] * count
    if not doc["errors"]:
        return True, [INDEXED] * count
    items = doc.get("items")
    if not isinstance(items, list) or len(items) != count:
        return False, [RETRY] * count
    values = [next(iter(i.values())) for i in items if isinstance(i, dict) and len(i) == 1]
    if len(values) != count or not all(isinstance(v, dict) and isinstance(v.get("status"), int) for v in values):
        return False, [RETRY] * count
    return True, [item_fate(v) for v in values]


# ---- the target ---------------------------------------------------------------------------------------------
def parts(fdp) -> list[Part]:
    out, number = [], 0
    for _ in range(fdp.ConsumeIntInRange(1, 3)):
        docs = []
        for _ in range(fdp.ConsumeIntInRange(1, 8)):
            docs.append(b'{"create":{"_id":"%d"}}\n{"m":"%s"}\n' % (number, b"x" * fdp.ConsumeIntInRange(0, 200)))
            number += 1
        lines = [fdp.ConsumeIntInRange(1, 3) for _ in docs] if fdp.ConsumeBool() else None
        part = Part(docs, EsStats(), lines=lines)
        part.pending = [i for i in range(len(docs)) if fdp.ConsumeIntInRange(0, 3)] or [0]  # a retry sends some
        out.append(part)
    return out


def run(coro):
    """Run a coroutine that never waits on anything (the session answers at once) to its end, without a loop."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise Finding("the batcher waited on something the fake session does not give")


def fuzz_one(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    batch = parts(fdp)
    session = Session(fdp)
    CLIENT._session = session
    batcher = Batcher(CLIENT, bulk_bytes=fdp.ConsumeIntInRange(1, 4000), batch_wait=0.0, backoff_init=1.0,
                      backoff_max=1.0)
    where = {}  # document number -> (part, index)
    for part in batch:
        for i, doc in enumerate(part.docs):
            where[int(_ID.search(doc).group(1))] = (part, i)
    pending = {id(p): list(p.pending) for p in batch}
    try:
        answered = run(batcher._send([(p, p.pending) for p in batch]))
    except Finding:
        raise
    except Exception as exc:
        raise Finding(f"an answer raised {type(exc).__name__}: {exc!s:.300}") from exc
    check(batch, pending, where, session.requests, answered, batcher)


def check(batch: list[Part], pending: dict, where: dict, requests: list, answered: bool, batcher: Batcher) -> None:
    fate: dict[int, object] = {}
    forwarded, statuses = Counter(), {id(p): Counter() for p in batch}
    want_answered = True
    for ids, status, body in requests:
        ok, got = meaning(status, body, len(ids))
        want_answered = want_answered and ok
        for n, f in zip(ids, got, strict=True):
            part, _ = where[n]
            forwarded[id(part)] += 1
            if f != SPLIT:
                if n in fate:
                    raise Finding(f"document {n} was answered twice: {requests!r:.500}")
                fate[n] = f
        for part in {id(where[n][0]): where[n][0] for n in ids}.values():
            statuses[id(part)][status] += 1
    sent = {n for n, (p, i) in where.items() if i in pending[id(p)]}
    same("documents answered", sorted(fate), sorted(sent))
    same("answered", answered, want_answered)
    for part in batch:
        weight = part.lines or [1] * len(part.docs)
        mine = [(i, fate[n]) for n, (p, i) in where.items() if p is part and n in fate]
        same("still pending", part.pending, [i for i in pending[id(part)] if dict(mine)[i] == RETRY])
        same("indexed", part.settled.indexed, sum(weight[i] for i, f in mine if f == INDEXED))
        same("duplicates", part.settled.duplicates, sum(weight[i] for i, f in mine if f == DUPLICATE))
        dropped = Counter()
        for i, f in mine:
            if isinstance(f, tuple):
                dropped[f[1]] += weight[i]
        same("dropped", part.settled.dropped, dropped)
        same("forwarded", part.stats.forwarded, forwarded[id(part)])
        same("statuses", part.stats.statuses, statuses[id(part)])
    wait = batcher._retry_after
    if wait is not None and not (math.isfinite(wait) and 0.0 <= wait <= MAX_RETRY_AFTER):
        raise Finding(f"Retry-After -> {wait!r}")


def seeds() -> dict[str, bytes]:
    return {}
