"""The Loki sink: one container's journal → entries for its (url, tenant) batcher, at least once.

As the forward sink: it reads the journal through its own cursor, so a Loki that is down or slow only grows this
sink's backlog on disk. A batch of journal bytes becomes one part of a push (one stream per source, entries in
timestamp order); the saved cursor moves when that push got a 2xx, or a 400 (Loki stored the valid part and will
never take the rest: counted as ``loki_rejected``, never resent). A kill repeats at most one batch, with the very
same labels, timestamps and lines, so Loki drops what it still can recognise as duplicates.

Before a batch goes: 16 KiB chunks are joined into one entry up to ``loki-max-line-size``, and entries Loki
would refuse (too old, too far ahead, too long) are dropped and counted by reason. A container that
``loki-relabel-config`` drops is read and counted as ``filtered``, never sent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass

from driver.frames import FrameDecoder
from driver.journal import Cursor, CursorStore, Journal
from driver.outputs.loki import codec
from driver.outputs.loki.batcher import Batcher, LokiStats, Part
from driver.outputs.loki.client import Outcome
from driver.outputs.loki.labels import with_source
from driver.outputs.loki.limits import LINE_TOO_LONG, TOO_NEW, TOO_OLD, Limits, bounds, entry_reason
from driver.partials import merge_partials
from driver.sinks.base import read_frames

log = logging.getLogger(__name__)

NAME = "loki"
BATCH_BYTES = 256 << 10  # journal bytes per batch: ~4k short lines
PROBE_BYTES = 16 << 10  # while Loki is away: one small batch per container in memory (as forward's probes)
FILTERED = "filtered"
REJECTED = "loki_rejected"
DEFAULT_LIMITS = Limits()


@dataclass
class _Batch:
    start: int
    end: int
    part: Part | None  # None: nothing to send (all dropped or filtered)
    lines: int  # entries as received
    dropped: dict[str, int]


class LokiSink:
    name = NAME

    def __init__(self, journal: Journal, store: CursorStore, batcher: Batcher, labels: dict[str, str] | None, *,
                 container_id: str, limits: Limits = DEFAULT_LIMITS, structured_metadata: bool = False,
                 now_ns=None, on_close=None) -> None:
        self.journal = journal
        self.store = store
        self.batcher = batcher
        self.container_id = container_id
        self.limits = limits
        self.filtered = labels is None
        self._streams = {src: codec.format_labels(with_source(labels, src)) for src in ("stdout", "stderr")} \
            if labels is not None else {}
        self._base_labels = labels or {}
        self._metadata = codec.metadata_bytes({"container_id": container_id}) if structured_metadata else None
        self._now_ns = now_ns or time.time_ns  # injectable: the age checks are about the wall clock
        self._on_close = on_close  # awaited by aclose(): lets go of the shared batcher
        self.decoder = FrameDecoder()
        self.cursor: Cursor = store.load(NAME)
        if self.cursor.pos < journal.start:
            self.cursor.pos = journal.start
        extra = self.cursor.extra
        self.stats = LokiStats(acked=int(extra.get("acked", 0)), dropped=Counter(extra.get("dropped", {})))
        self._base = self._lifetime()  # restored counts: run_counts() are this run's
        self._sealed = False
        self._saved_pos = self.cursor.pos
        self._pending: _Batch | None = None
        self._limit = BATCH_BYTES
        journal.cursors[NAME] = self.cursor

    def _lifetime(self) -> dict[str, int]:
        return {"acked": self.stats.acked, "journal_cap": self.cursor.dropped_frames,
                **{f"dropped_{k}": v for k, v in self.stats.dropped.items()}}

    def run_counts(self) -> dict[str, int]:
        """This run's counts in the outputs' keys (driver.outputs.OutputConsumer): the cursor restores lifetime
        ones; totals add runs up. Drops are by reason (dropped_<reason>); ``dropped`` is the journal cap's."""
        now = self._lifetime()
        counts = {k: v - self._base.get(k, 0) for k, v in now.items()}
        counts["dropped"] = counts.pop("journal_cap")
        counts.update(forwarded=self.stats.sent, retried=self.stats.retried, failures=self.stats.failures)
        return counts

    @property
    def up(self) -> bool:
        return self.stats.up

    def reset_run_counts(self) -> None:
        self.stats.sent = self.stats.retried = self.stats.failures = 0
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
        while this one waits for its push (not while Loki is away: then batches are small and one at a time)."""
        probing = not self.batcher.up
        if self._pending is None:
            self._pending = await loop.run_in_executor(executor, self._prepare,
                                                       min(self._limit, PROBE_BYTES) if probing else self._limit)
            if self._pending is None:
                return False
        batch = self._pending
        following = None
        if not probing and batch.part is not None:
            following = loop.run_in_executor(executor, self._prepare, self._limit)
        try:
            result = await self.batcher.send(batch.part) if batch.part is not None else None
        except BaseException:
            if following is not None:
                following.add_done_callback(lambda f: f.exception())  # closing: the saved cursor re-reads it
            raise
        if result is not None and result.outcome is Outcome.SPLIT and batch.end - batch.start > PROBE_BYTES:
            # Too large for Loki: read it again in smaller batches.
            self._limit = max(PROBE_BYTES, (batch.end - batch.start) // 2)
            if following is not None:
                await asyncio.wait([following])
            if self._saved_pos >= self.journal.start:
                self._pending = None
                self.journal.rewind(self.cursor, self._saved_pos)
                return True
            # The cap gave up its journal bytes meanwhile: it cannot be read again. Lost, and counted as the
            # cap's other drops; the batch after it goes on.
            self.journal.count_lost(self.cursor, batch.lines, batch.end - batch.start)
            self._saved_pos = batch.end
            self._pending = following.result() if following is not None and not following.exception() else None
            return True
        self._count(batch, result)
        self._saved_pos = batch.end
        self._pending = None
        if not self._save(batch.end, in_place_only=True):
            await loop.run_in_executor(executor, self._save, batch.end)
        self._pending = await following if following is not None else None
        return True

    def _count(self, batch: _Batch, result) -> None:
        for reason, n in batch.dropped.items():
            self.stats.dropped[reason] += n
        if result is None:
            return
        if result.outcome is Outcome.STORED:
            self.stats.acked += batch.part.entries
        else:  # a final 400, or a smallest batch still too large
            self.stats.dropped[REJECTED] += batch.part.entries

    def _prepare(self, limit: int) -> _Batch | None:
        """Read, check and encode the next batch of at most ``limit`` journal bytes (worker thread)."""
        while True:
            start = self.cursor.pos
            got = read_frames(self.journal, self.decoder, start, limit, self.sealed)
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
        if self.filtered:
            return _Batch(start, start + used, None, lines, {FILTERED: lines} if lines else {})
        entries = merge_partials(entries, self.limits.max_line_size or 1 << 62)
        dropped: dict[str, int] = {}
        part = self._part(entries, dropped, more=start + used < self.journal.end) if entries else None
        return _Batch(start, start + used, part, lines, dropped)

    def _part(self, entries: list[tuple], dropped: dict[str, int], more: bool) -> Part | None:
        """One stream per source, entries Loki would refuse left out and counted in ``dropped``. ``more``: the
        journal holds more already, so the part should not wait for batch-wait."""
        oldest, newest, longest = bounds(self.limits, self._now_ns())
        with_partials = self._metadata is not None and any(e[3] for e in entries)
        streams, sent, size = [], 0, 0
        for source in sorted({e[0] for e in entries}):
            if with_partials:
                got = self._encode_with_partial_ids(entries, source, oldest, newest, longest)
            else:
                got = codec.encode_stream(entries, source, self._metadata or b"", oldest, newest, longest)
                if not got[6]:  # a timestamp went back: Loki wants one stream's entries in time order
                    ordered = sorted((e for e in entries if e[0] == source), key=lambda e: e[1])
                    got = codec.encode_stream(ordered, source, self._metadata or b"", oldest, newest, longest)
            encoded, n, nbytes, too_old, too_new, too_long = got[:6]
            for reason, count in ((TOO_OLD, too_old), (TOO_NEW, too_new), (LINE_TOO_LONG, too_long)):
                if count:
                    dropped[reason] = dropped.get(reason, 0) + count
            if n:
                streams.append((self._labels_of(source), encoded))
                sent += n
                size += nbytes
        if not sent:
            return None
        return Part(streams, sent, size, self.stats, urgent=self.sealed or more)

    def _encode_with_partial_ids(self, entries, source, oldest, newest, longest) -> tuple:
        """With structured metadata on, chunks that were not joined carry their partial ids (Python: opt-in)."""
        out = bytearray()
        sent = size = 0
        counts = {TOO_OLD: 0, TOO_NEW: 0, LINE_TOO_LONG: 0}
        for e in sorted((e for e in entries if e[0] == source), key=lambda e: e[1]):
            reason = entry_reason(self.limits, self._now_ns(), e[1], len(e[2]))
            if reason:
                counts[reason] += 1
                continue
            md = self._metadata
            if e[3]:
                md += codec.metadata_bytes({"partial_id": e[5], "partial_ordinal": str(e[6]),
                                            "partial_last": "true" if e[4] else "false"})
            codec.append_entry(out, e[1], e[2], md)
            sent += 1
            size += len(e[2]) + len(md)
        return bytes(out), sent, size, counts[TOO_OLD], counts[TOO_NEW], counts[LINE_TOO_LONG]

    def _labels_of(self, source: str) -> str:
        labels = self._streams.get(source)
        if labels is None:  # a source other than stdout/stderr: its own stream, labelled as the driver does
            labels = self._streams[source] = codec.format_labels(with_source(self._base_labels, source))
        return labels

    def _save(self, pos: int, in_place_only: bool = False) -> bool:
        try:
            return self.store.save(self.cursor, pos=pos, extra={"acked": self.stats.acked,
                                                                  "dropped": dict(self.stats.dropped)},
                                   in_place_only=in_place_only)
        except OSError as exc:
            log.warning("could not save loki cursor", extra={"error": str(exc)})
            return True

    def flush(self) -> None:
        self._save(self._saved_pos)

    def close(self) -> None:
        self.flush()

    async def aclose(self) -> None:
        """The batcher is shared: it closes when its last sink lets go of it."""
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            await on_close()
