"""The Elasticsearch sink: one container's journal → documents for its destination's batcher, exactly once within
one backing index when document ids are on (the default), at least once without them.

As the forward and Loki sinks: it reads the journal through its own cursor, so a cluster that is down, red or
read-only only grows this sink's backlog on disk. A batch of journal bytes becomes one part of the bulk
requests; the saved cursor moves when every document of it is settled (indexed, a 409 duplicate, or dropped for
good and counted by ``error.type``). A kill or a failure resends at most one batch, with the same ids, so what
was indexed already answers 409 and is counted as ``duplicates``, not indexed twice.

A live container's lines gather for up to GATHER_SECONDS before a batch is taken, unless a full batch waits
already (then the next one is read ahead while this one travels): a batch's fixed cost then spreads over
thousands of lines instead of the few that arrived since the last one.

Ordinary frames go straight to one bulk body in C (``_direct_batch``: no tuple, no bytes object per line); from
the first frame that needs more (a chunk to join, garbage) a batch goes the decoded way, which writes the same
bytes (tests/unit/test_es_frames_c.py).

16 KiB chunks are joined into one message up to ``es-max-message-size``; a joined line keeps its first chunk's
journal offset, in its id and in ``event.sequence``. Counts are in lines as received (a joined line counts its
chunks), so ``acked + dropped = received`` holds per output as for forward.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from driver.journal import CursorStore, Journal
from driver.outputs.acked import AckedOutput, Batch
from driver.outputs.elasticsearch.batcher import Batcher, EsStats, Part
from driver.outputs.elasticsearch.codec import DocumentTemplate
from driver.partials import merge_partials_at

log = logging.getLogger(__name__)

NAME = "elasticsearch"
BATCH_BYTES = 256 << 10  # journal bytes per batch: ~8k short lines, ~4 MB of documents
PROBE_BYTES = 16 << 10  # while the cluster is away: one small batch per container in memory
# Longest wait of a live container's sink for its lines to fill a batch (es-batch-wait if shorter). A batch costs
# ~240 µs whatever its size (a cursor save, thread hops, a bulk part, a request): taken as soon as a line arrives,
# the batches of a busy container held a few dozen lines each and cost it more than the lines did.
GATHER_SECONDS = 0.05


@dataclass
class _Batch(Batch):
    part: Part | None  # None: no entries (garbage only)


class EsSink(AckedOutput):
    name = NAME
    BATCH_BYTES = BATCH_BYTES
    PROBE_BYTES = PROBE_BYTES
    wants_offsets = True  # ids and event.sequence are journal offsets
    joins_chunks = True  # a line's 16 KiB chunks are one message (up to es-max-message-size)

    def __init__(self, journal: Journal, store: CursorStore, batcher: Batcher, template: DocumentTemplate, *,
                 container_id: str, max_message: int = 1 << 20, on_close=None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.batcher = batcher
        self._sleep = sleep  # tests see the gathering waits (and write meanwhile) instead of spending them
        self.template = template
        self.max_message = max_message
        self._on_close = on_close  # awaited by aclose(): lets go of the shared batcher
        super().__init__(journal, store, container_id=container_id, stats=EsStats())
        more = self.cursor.extra.get("more", {})
        self.stats.indexed, self.stats.duplicates = int(more.get("indexed", 0)), int(more.get("duplicates", 0))
        self.stats.statuses.update({int(k[7:]): int(n) for k, n in more.items() if k.startswith("status_")})

    def _more_counts(self) -> dict[str, int]:
        """indexed and duplicates (together acked), and ``status_<code>`` per request holding this container's
        documents (0: no HTTP answer)."""
        return {"indexed": self.stats.indexed, "duplicates": self.stats.duplicates,
                **{f"status_{code}": n for code, n in self.stats.statuses.items()}}

    # ---- the output's part ---------------------------------------------------------------------------------
    def _on_sealed(self, sealed: bool) -> None:
        if sealed:
            self.batcher.hurry(self.stats)  # its last lines go without waiting for batch-wait

    def _probing(self) -> bool:
        return not self.batcher.up

    async def _gather(self) -> None:
        """A live container's sink with less than a batch waiting lets its lines gather for a moment, so a busy
        container's batches are full; a stopped container's last lines go at once."""
        wait = min(GATHER_SECONDS, self.batcher.batch_wait)
        if wait > 0 and not self.sealed and self.journal.end - self.cursor.pos < self._limit:
            await self._sleep(wait)

    def _prepare_after(self, batch: _Batch) -> bool:
        """Only with a full batch waiting already (a backlog): otherwise the next batch is what arrives while this
        one travels, gathered, instead of the few lines that came in while it was made."""
        return batch.part is not None and self.journal.end - batch.end >= self._limit

    async def _deliver(self, batch: _Batch) -> bool:
        """Done when every document is settled: the batcher retries what is not, in memory, so this never gives
        a batch back."""
        if batch.part is None:
            return True
        settled = await self.batcher.send(batch.part)
        self.stats.indexed += settled.indexed
        self.stats.duplicates += settled.duplicates
        self.stats.acked += settled.indexed + settled.duplicates
        self.stats.dropped.update(settled.dropped)
        return True

    def _batch(self, start: int, end: int, entries: list[tuple], offsets: list[int] | None) -> _Batch:
        """Join chunks and encode the documents (worker thread)."""
        if not entries:
            return _Batch(start, end, 0, None)
        lines = len(entries)
        chunks: list[int] = []
        entries, offsets = merge_partials_at(entries, offsets, self.max_message, chunks)
        docs = self.template.documents(entries, offsets)
        joined = chunks if len(docs) < lines else None  # counts stay in lines, as received
        return _Batch(start, end, lines, Part(docs, self.stats, urgent=self.sealed or end < self.journal.end,
                                              lines=joined))

    def _direct_batch(self, start: int, limit: int) -> _Batch | None:
        """The batch encoded in C straight from the journal's frames up to the first one that needs the decoded
        way (a chunk to join, garbage) or is not all there yet (worker thread); None: the decoded way."""
        data = self.journal.read(start, limit)
        got = self.template.frames_documents(data, start) if data else None
        if got is None or not got[0]:
            return None
        used, docs = got
        end = start + used
        return _Batch(start, end, len(docs), Part(docs, self.stats, urgent=self.sealed or end < self.journal.end))

    async def aclose(self) -> None:
        """The batcher is shared: it closes when its last sink lets go of it."""
        self.batcher.forget(self.stats)
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            await on_close()
