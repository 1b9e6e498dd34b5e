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

import logging
import time
from dataclasses import dataclass

from driver.journal import CursorStore, Journal
from driver.outputs.acked import AckedOutput, Batch
from driver.outputs.loki import codec
from driver.outputs.loki.batcher import Batcher, LokiStats, Part
from driver.outputs.loki.client import Outcome, PushResult
from driver.outputs.loki.labels import with_source
from driver.outputs.loki.limits import LINE_TOO_LONG, TOO_NEW, TOO_OLD, Limits, bounds, entry_reason
from driver.partials import merge_partials

log = logging.getLogger(__name__)

NAME = "loki"
BATCH_BYTES = 256 << 10  # journal bytes per batch: ~8.7k short lines (seq 1 1000000: ~30-byte frames)
PROBE_BYTES = 16 << 10  # while Loki is away: one small batch per container in memory (as forward's probes)
FILTERED = "filtered"
REJECTED = "loki_rejected"
DEFAULT_LIMITS = Limits()


@dataclass
class _Batch(Batch):
    part: Part | None  # None: nothing to send (all dropped or filtered)
    dropped: dict[str, int]


class LokiSink(AckedOutput):
    name = NAME
    BATCH_BYTES = BATCH_BYTES
    PROBE_BYTES = PROBE_BYTES

    def __init__(self, journal: Journal, store: CursorStore, batcher: Batcher, labels: dict[str, str] | None, *,
                 container_id: str, limits: Limits = DEFAULT_LIMITS, structured_metadata: bool = False,
                 now_ns=None, on_close=None) -> None:
        self.batcher = batcher
        super().__init__(journal, store, container_id=container_id, stats=LokiStats())
        self.limits = limits
        self.filtered = labels is None
        self.joins_chunks = not self.filtered  # a filtered container's lines are dropped, not joined
        self._streams = {src: codec.format_labels(with_source(labels, src)) for src in ("stdout", "stderr")} \
            if labels is not None else {}
        self._base_labels = labels or {}
        self._metadata = codec.metadata_bytes({"container_id": container_id}) if structured_metadata else None
        self._now_ns = now_ns or time.time_ns  # injectable: the age checks are about the wall clock
        self._on_close = on_close  # awaited by aclose(): lets go of the shared batcher
        more = self.cursor.extra.get("more", {})
        self.stats.statuses.update({int(k[7:]): int(n) for k, n in more.items() if k.startswith("status_")})

    def _more_counts(self) -> dict[str, int]:
        """``status_<code>`` per push holding this container's entries (0: no HTTP answer)."""
        return {f"status_{code}": n for code, n in self.stats.statuses.items()}

    def _on_sealed(self, sealed: bool) -> None:
        if sealed:
            self.batcher.hurry(self.stats)  # its last lines go without waiting for batch-wait

    def _probing(self) -> bool:
        return not self.batcher.up

    def _prepare_after(self, batch: _Batch) -> bool:
        return batch.part is not None

    async def _deliver(self, batch: _Batch) -> bool:
        # The batcher retries a push in memory until Loki answers: the counts it moves are saved meanwhile.
        result = await self._saving_counts(self._push(batch.part)) if batch.part is not None else None
        if result is not None and result.outcome is Outcome.SPLIT and batch.end - batch.start > PROBE_BYTES:
            # Too large for Loki: read it again in smaller batches.
            self._limit = max(PROBE_BYTES, (batch.end - batch.start) // 2)
            return False
        self.stats.dropped.update(batch.dropped)
        if result is not None and result.outcome is Outcome.STORED:
            self.stats.acked += batch.part.entries
        elif result is not None:  # a final 400, or a smallest batch still too large
            self.stats.dropped[REJECTED] += batch.part.entries
        return True

    async def _push(self, part: Part) -> PushResult:
        try:
            return await self.batcher.send(part)
        except BaseException:
            if part.done is not None and not part.done.done():
                part.done.cancel()  # given back (closing, a finished container's deadline): the batcher skips it
            raise

    def _batch(self, start: int, end: int, entries: list[tuple], offsets: list[int] | None) -> _Batch:
        """Check and encode a batch (worker thread)."""
        lines = len(entries)
        if self.filtered:
            return _Batch(start, end, lines, None, {FILTERED: lines} if lines else {})
        entries = merge_partials(entries, self.limits.max_line_size or 1 << 62)
        dropped: dict[str, int] = {}
        part = self._part(entries, dropped, more=end < self.journal.end) if entries else None
        return _Batch(start, end, lines, part, dropped)

    def _direct_batch(self, start: int, limit: int) -> _Batch | None:
        """The batch encoded in C straight from the journal's frames, when they need nothing the decoded entries'
        way does: no chunk to join, no garbage to step over, each stream in time order (worker thread)."""
        if self.filtered:
            return None
        data = self.journal.read(start, limit)
        got = codec.encode_frames(data, self._metadata or b"", *bounds(self.limits, self._now_ns())) if data else None
        if got is None:
            return None
        used, lines, declined, streams = got
        final = self.sealed and start + len(data) >= self.journal.end  # a torn tail is garbage: FrameDecoder's
        if declined or not used or (final and used < len(data)) or not all(s[7] for s in streams):
            return None
        dropped: dict[str, int] = {}
        part = self._part_of(streams, dropped, more=start + used < self.journal.end)
        return _Batch(start, start + used, lines, part, dropped)

    def _part(self, entries: list[tuple], dropped: dict[str, int], more: bool) -> Part | None:
        """One stream per source, entries Loki would refuse left out and counted in ``dropped``. ``more``: the
        journal holds more already, so the part should not wait for batch-wait."""
        oldest, newest, longest = bounds(self.limits, self._now_ns())
        with_partials = self._metadata is not None and any(e[3] for e in entries)
        streams = []
        for source in sorted({e[0] for e in entries}):
            if with_partials:
                got = self._encode_with_partial_ids(entries, source, oldest, newest, longest)
            else:
                got = codec.encode_stream(entries, source, self._metadata or b"", oldest, newest, longest)
                if not got[6]:  # a timestamp went back: Loki wants one stream's entries in time order
                    ordered = sorted((e for e in entries if e[0] == source), key=lambda e: e[1])
                    got = codec.encode_stream(ordered, source, self._metadata or b"", oldest, newest, longest)
            streams.append((source, *got[:6]))
        return self._part_of(streams, dropped, more)

    def _part_of(self, streams: list[tuple], dropped: dict[str, int], more: bool) -> Part | None:
        """The part of encoded streams ``(source, encoded, sent, size, too_old, too_new, too_long, ...)``, what
        Loki would refuse counted in ``dropped``; None when nothing is left to send."""
        labelled, sent, size = [], 0, 0
        for source, encoded, n, nbytes, too_old, too_new, too_long, *_ in streams:
            for reason, count in ((TOO_OLD, too_old), (TOO_NEW, too_new), (LINE_TOO_LONG, too_long)):
                if count:
                    dropped[reason] = dropped.get(reason, 0) + count
            if n:
                labelled.append((self._labels_of(source), encoded))
                sent += n
                size += nbytes
        if not sent:
            return None
        return Part(labelled, sent, size, self.stats, urgent=self.sealed or more)

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

    async def aclose(self) -> None:
        """The batcher is shared: it closes when its last sink lets go of it."""
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            await on_close()
