"""One bulk batcher per destination (hosts, credentials, index, pipeline), shared by every container that writes
there: the documents the containers' sinks hand in become bulk requests, one in flight at a time, over one
keep-alive client.

A request goes when its parts reach ``es-bulk-size`` bytes, when its oldest part has waited ``es-batch-wait``,
or at once when a part is urgent (its container stopped, or its sink has more waiting). Each sink awaits its
part until every document of it is settled: indexed, a duplicate (409: a resend of something already there),
or dropped for good (a 400 document error, or a single document over the request limit). Everything else is
retried, with backoff, for the unsettled documents only; a 413 halves the request (and the later ones). The queue
and its timing are driver.outputs.batching.PartQueue's.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from driver.outputs.acked import OutputStats
from driver.outputs.batching import LOG_EVERY, Backoff, PartQueue
from driver.outputs.elasticsearch import codec
from driver.outputs.elasticsearch.client import EsClient, Outcome

log = logging.getLogger(__name__)
_ID = re.compile(rb'"_id":"([^"]*)"')


@dataclass
class EsStats(OutputStats):
    """An Elasticsearch sink's counts (driver.outputs.acked.OutputStats): the batcher counts each request's
    documents in its part's stats (``forwarded``, ``retried``, ``failures``, ``up``, ``statuses``), the sink what
    became of them (``acked`` = ``indexed`` + ``duplicates``, ``dropped`` by error.type)."""

    indexed: int = 0  # lines Elasticsearch indexed, past the saved cursor
    duplicates: int = 0  # lines answered 409 on create: indexed by an earlier send (a resend), not an error
    statuses: Counter = field(default_factory=Counter)  # HTTP status of each request holding its documents (0: none)


@dataclass
class Settled:
    """What became of a part's documents, in lines (a joined 16 KiB line counts its chunks, as received)."""

    indexed: int = 0
    duplicates: int = 0
    dropped: Counter = field(default_factory=Counter)


@dataclass
class Part:
    """One sink's documents for the bulk requests."""

    docs: codec.Documents  # a list of documents is made one in __post_init__
    stats: EsStats
    urgent: bool = False
    lines: list[int] | None = None  # lines each document stands for (joined chunks); None: one each
    size: int = 0
    done: asyncio.Future | None = None
    queued_at: float = 0.0
    pending: list[int] = field(default_factory=list)  # documents not settled yet
    settled: Settled = field(default_factory=Settled)

    def __post_init__(self) -> None:
        if not isinstance(self.docs, codec.Documents):
            self.docs = codec.Documents.of(self.docs)
        if not self.size:
            self.size = len(self.docs.body)


class Batcher(PartQueue):
    sink_name = "elasticsearch"

    def __init__(self, client: EsClient, *, bulk_bytes: int, batch_wait: float, backoff_init: float,
                 backoff_max: float, backoff: Backoff | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        super().__init__(client, batch_wait=batch_wait, backoff=backoff or Backoff(backoff_init, backoff_max),
                         sleep=sleep)
        self.bulk_bytes = bulk_bytes  # lowered by a 413
        self._last_drop_log = -LOG_EVERY
        self._retry_after: float | None = None  # the last failed answer's Retry-After
        self._last_error = ""  # why the last round left documents unsettled (the status view shows it)

    @property
    def request_bytes(self) -> int:
        return self.bulk_bytes

    # ---- sink side -----------------------------------------------------------------------------------------
    async def send(self, part: Part) -> Settled:
        """Queue a part and wait until every document of it is settled."""
        part.pending = list(range(len(part.docs)))
        return await super().send(part)

    def forget(self, stats: EsStats) -> None:
        """The sink owning these stats closed: its part is not retried for it any more (its cursor re-reads it)."""
        for part in self._queue + self._in_flight:
            if part.stats is stats and part.done is not None and not part.done.done():
                part.done.cancel()
        self._queue = [p for p in self._queue if p.stats is not stats]

    # ---- the request loop ----------------------------------------------------------------------------------
    async def _deliver(self, parts: list[Part]) -> None:
        """Send the parts' documents until each is settled; only the unsettled ones go again."""
        attempt = 0
        while True:
            parts = [p for p in parts if not p.done.done()]  # a sink that closed meanwhile
            groups = [(p, p.pending) for p in parts if p.pending]
            if not groups:
                return
            if attempt:
                for p in parts:
                    p.stats.retried += len(p.pending)
            attempt += 1
            answered = await self._send(groups)
            for p in parts:
                p.stats.up = answered
                if not p.pending and not p.done.done():
                    p.done.set_result(p.settled)
            unsettled = [p for p in parts if p.pending and not p.done.done()]
            if not unsettled:
                self.backoff.reset()
                return
            for p in unsettled:
                p.stats.failures += 1
                p.stats.last_error = self._last_error
            await self._sleep(self.backoff.next(self._retry_after))

    async def _send(self, groups: list[tuple[Part, list[int]]]) -> bool:
        """The pending documents, (part, indexes) in order, in requests of at most bulk_bytes (a 413 may have
        lowered it); settles what the answers settle. False when a request got no bulk answer (its documents stay
        pending). Whole parts go as they are: the per-document work is only for a part larger than a request."""
        requests: list[list[tuple[Part, list[int]]]] = [[]]
        size = 0
        for part, indexes in groups:
            n = part.size if len(indexes) == len(part.docs) else part.docs.span_size(indexes)
            if size + n <= self.bulk_bytes:
                requests[-1].append((part, indexes))
                size += n
                continue
            at = 0
            while at < len(indexes):  # over the room left: as many documents as fit, then a new request
                taken = part.docs.fitting(indexes, at, self.bulk_bytes - size)
                if not taken:
                    if requests[-1]:
                        requests.append([])
                        size = 0
                        continue
                    taken = 1  # one document over the limit goes alone (its 413 makes it final)
                run = indexes[at:at + taken]
                requests[-1].append((part, run))
                size += part.docs.span_size(run)
                at += taken
        answered = True
        for request in requests:
            if request:
                answered = await self._request(request) and answered
        return answered

    async def _request(self, groups: list[tuple[Part, list[int]]]) -> bool:
        pieces = [piece for p, indexes in groups for piece in p.docs.pieces(indexes)]  # views: nothing copied
        count = sum(len(indexes) for _, indexes in groups)
        result = await self.client.bulk(pieces, count)
        for p, indexes in groups:
            p.stats.statuses[result.status] += 1
            p.stats.forwarded += len(indexes)
        if result.outcome is Outcome.SPLIT:
            self.up = True
            if count == 1:
                (p, indexes), = groups
                self._settle(p, indexes, [codec.ItemResult(codec.FINAL, 413, codec.TOO_LARGE, result.message)])
                return True
            self.bulk_bytes = max(1, min(self.bulk_bytes, sum(map(len, pieces)) // 2))
            docs = [(p, i) for p, indexes in groups for i in indexes]
            halves = docs[:count // 2], docs[count // 2:]
            first = await self._request(_grouped(halves[0]))
            return await self._request(_grouped(halves[1])) and first
        if result.outcome is Outcome.RETRY:
            self.up = False
            self._retry_after = result.retry_after
            self._last_error = f"HTTP {result.status}: {result.message[:200]}" if result.status else result.message
            self._complain("Elasticsearch bulk request failed; retrying, lines wait in the journals", result)
            return False
        self.up = True
        at = 0
        for p, indexes in groups:  # items come in request order
            self._settle(p, indexes, result.items[at:at + len(indexes)] if result.items is not None else None)
            at += len(indexes)
        retried = [item for item in result.items or () if item.verdict == codec.RETRY]
        if retried:
            self._last_error = f"{len(retried)} documents refused for now: {retried[0].error_type}"
            self._complain(f"Elasticsearch refused {len(retried)} documents for now ({retried[0].error_type}: "
                           f"{retried[0].reason[:200]}); retrying those", result)
        return True

    def _settle(self, part: Part, indexes: list[int], items: list[codec.ItemResult] | None) -> None:
        """Count what became of these documents of a part (None: all indexed); those to retry stay pending."""
        weight = part.lines.__getitem__ if part.lines is not None else (lambda i: 1)
        if items is None:
            part.settled.indexed += sum(map(weight, indexes)) if part.lines is not None else len(indexes)
            done = set(indexes)
        else:
            done = set()
            for index, item in zip(indexes, items, strict=True):
                if item.verdict == codec.RETRY:
                    continue
                done.add(index)
                if item.verdict == codec.INDEXED:
                    part.settled.indexed += weight(index)
                elif item.verdict == codec.DUPLICATE:
                    part.settled.duplicates += weight(index)
                else:
                    part.settled.dropped[item.error_type] += weight(index)
                    self._log_drop(part, index, item)
        part.pending = [i for i in part.pending if i not in done] if len(done) < len(part.pending) else []

    def _log_drop(self, part: Part, index: int, item: codec.ItemResult) -> None:
        now = time.monotonic()
        if now - self._last_drop_log >= LOG_EVERY:
            self._last_drop_log = now
            found = _ID.search(part.docs[index])
            log.warning("Elasticsearch rejected a document for good (counted as dropped; not resent)",
                        extra={"sink": "elasticsearch", "url": self.client.url, "status": item.status,
                               "reason": item.error_type, "error": item.reason[:500],
                               "id": found.group(1).decode() if found else ""})


def _grouped(docs: list[tuple[Part, int]]) -> list[tuple[Part, list[int]]]:
    """(part, index) pairs in order → (part, indexes) runs."""
    groups: list[tuple[Part, list[int]]] = []
    for part, i in docs:
        if groups and groups[-1][0] is part:
            groups[-1][1].append(i)
        else:
            groups.append((part, [i]))
    return groups


def make_batcher(settings) -> Batcher:
    """The batcher for an EsSettings (its batch and backoff options; the first container's win)."""
    return Batcher(EsClient(settings), bulk_bytes=settings.bulk_bytes, batch_wait=settings.batch_wait,
                   backoff_init=settings.backoff_init, backoff_max=settings.backoff_max)
