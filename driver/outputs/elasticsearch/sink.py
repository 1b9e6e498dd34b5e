"""The Elasticsearch sink: one container's journal → documents for its destination's batcher, exactly once within
one backing index when document ids are on (the default), at least once without them.

As the forward and Loki sinks: it reads the journal through its own cursor, so a cluster that is down, red or
read-only only grows this sink's backlog on disk. A batch of journal bytes becomes one part of the bulk
requests; the saved cursor moves when every document of it is settled (indexed, a 409 duplicate, or dropped for
good and counted by ``error.type``). A kill or a failure resends at most one batch, with the same ids, so what
was indexed already answers 409 and is counted as ``duplicates``, not indexed twice.

16 KiB chunks are joined into one message up to ``es-max-message-size``; a joined line keeps its first chunk's
journal offset, in its id and in ``event.sequence``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass

from driver.frames import FrameDecoder
from driver.journal import Cursor, CursorStore, Journal
from driver.outputs.elasticsearch.batcher import Batcher, EsStats, Part, Settled
from driver.outputs.elasticsearch.codec import DocumentTemplate
from driver.partials import merge_partials_at
from driver.sinks.base import read_frames

log = logging.getLogger(__name__)

NAME = "elasticsearch"
BATCH_BYTES = 256 << 10  # journal bytes per batch: ~4k short lines, ~1.5 MB of documents
PROBE_BYTES = 16 << 10  # while the cluster is away: one small batch per container in memory


@dataclass
class _Batch:
    start: int
    end: int
    part: Part | None  # None: no entries (garbage only)
    lines: int  # entries as received


class EsSink:
    name = NAME

    def __init__(self, journal: Journal, store: CursorStore, batcher: Batcher, template: DocumentTemplate, *,
                 container_id: str, max_message: int = 1 << 20, on_close=None) -> None:
        self.journal = journal
        self.store = store
        self.batcher = batcher
        self.template = template
        self.container_id = container_id
        self.max_message = max_message
        self._on_close = on_close  # awaited by aclose(): lets go of the shared batcher
        self.decoder = FrameDecoder()
        self.cursor: Cursor = store.load(NAME)
        if self.cursor.pos < journal.start:
            self.cursor.pos = journal.start
        extra = self.cursor.extra
        self.stats = EsStats(indexed=int(extra.get("indexed", 0)), duplicates=int(extra.get("duplicates", 0)),
                             dropped=Counter(extra.get("dropped", {})))
        self._base = self._lifetime()  # restored counts: run_counts() are this run's
        self._sealed = False
        self._saved_pos = self.cursor.pos
        self._pending: _Batch | None = None
        journal.cursors[NAME] = self.cursor

    def _lifetime(self) -> dict[str, int]:
        return {"acked": self.stats.indexed + self.stats.duplicates, "indexed": self.stats.indexed,
                "duplicates": self.stats.duplicates, "journal_cap": self.cursor.dropped_frames,
                **{f"dropped_{k}": v for k, v in self.stats.dropped.items()}}

    def run_counts(self) -> dict[str, int]:
        """This run's counts in the outputs' keys (driver.outputs.OutputConsumer), plus ``indexed`` and
        ``duplicates`` (together ``acked``: documents Elasticsearch holds) and ``status_<code>`` per request."""
        now = self._lifetime()
        counts = {k: v - self._base.get(k, 0) for k, v in now.items()}
        counts["dropped"] = counts.pop("journal_cap")
        counts.update(forwarded=self.stats.sent, retried=self.stats.retried, failures=self.stats.failures)
        counts.update({f"status_{code}": n for code, n in self.stats.statuses.items()})
        return counts

    @property
    def up(self) -> bool:
        return self.stats.up

    def reset_run_counts(self) -> None:
        self.stats.sent = self.stats.retried = self.stats.failures = 0
        self.stats.statuses.clear()
        self._base = self._lifetime()

    # ---- consumer contract ---------------------------------------------------------------------------------
    @property
    def sealed(self) -> bool:
        return self._sealed

    @sealed.setter
    def sealed(self, value: bool) -> None:
        self._sealed = value
        if value:
            self.batcher.hurry(self.stats)  # its last lines go without waiting for batch-wait

    @property
    def saved_pos(self) -> int:
        return self._saved_pos

    @property
    def done_pos(self) -> int:
        return self._saved_pos

    def caught_up(self) -> bool:
        return self._pending is None and self.cursor.pos >= self.journal.end

    async def step(self, loop: asyncio.AbstractEventLoop, executor) -> bool:
        """Deliver one batch; False when there is nothing to send. The next batch is prepared in a worker thread
        while this one is in the bulk requests (not while the cluster is away: then batches are small and one
        at a time)."""
        probing = not self.batcher.up
        limit = PROBE_BYTES if probing else BATCH_BYTES
        if self._pending is None:
            self._pending = await loop.run_in_executor(executor, self._prepare, limit)
            if self._pending is None:
                return False
        batch = self._pending
        following = None
        if not probing and batch.part is not None:
            following = loop.run_in_executor(executor, self._prepare, BATCH_BYTES)
        try:
            settled = await self.batcher.send(batch.part) if batch.part is not None else None
        except BaseException:
            if following is not None:
                following.add_done_callback(lambda f: f.exception())  # closing: the saved cursor re-reads it
            raise
        self._count(settled)
        self._saved_pos = batch.end
        self._pending = None
        if not self._save(batch.end, in_place_only=True):
            await loop.run_in_executor(executor, self._save, batch.end)
        self._pending = await following if following is not None else None
        return True

    def _count(self, settled: Settled | None) -> None:
        if settled is None:
            return
        self.stats.indexed += settled.indexed
        self.stats.duplicates += settled.duplicates
        self.stats.dropped.update(settled.dropped)

    def _prepare(self, limit: int) -> _Batch | None:
        """Read and encode the next batch of at most ``limit`` journal bytes (worker thread)."""
        while True:
            start = self.cursor.pos
            offsets: list[int] = []
            got = read_frames(self.journal, self.decoder, start, limit, self.sealed, offsets)
            if got is None:
                if start < self.journal.start:  # its segment was deleted under us: the cap counted it
                    self.journal.skip_lost(self.cursor)
                    continue
                return None
            entries, used = got
            if used == 0:
                return None
            if self.journal.take(self.cursor, start, used):
                break
        lines = len(entries)
        if not entries:
            return _Batch(start, start + used, None, 0)
        entries, offsets = merge_partials_at(entries, offsets, self.max_message)
        docs = self.template.documents(entries, offsets)
        more = start + used < self.journal.end
        return _Batch(start, start + used, Part(docs, self.stats, urgent=self.sealed or more), lines)

    def _save(self, pos: int, in_place_only: bool = False) -> bool:
        try:
            return self.store.save(self.cursor, pos=pos, extra={"indexed": self.stats.indexed,
                                                                  "duplicates": self.stats.duplicates,
                                                                  "dropped": dict(self.stats.dropped)},
                                   in_place_only=in_place_only)
        except OSError as exc:
            log.warning("could not save elasticsearch cursor", extra={"error": str(exc)})
            return True

    def flush(self) -> None:
        self._save(self._saved_pos)

    def close(self) -> None:
        self.flush()

    async def aclose(self) -> None:
        """The batcher is shared: it closes when its last sink lets go of it."""
        self.batcher.forget(self.stats)
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            await on_close()
