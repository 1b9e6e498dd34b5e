"""The forward sink: journal → Fluent forward records → an aggregator (Fluent Bit, Fluentd), at least once.

It reads the journal through its own cursor, so an aggregator that is down, slow or hung only grows this sink's
backlog on disk; the FIFO and the json.log writer never wait for it. A batch of journal bytes becomes one or more
PackedForward frames; the cursor that is saved (and survives a restart) moves only when every frame of the batch
was acknowledged. So a resend after a failure or a kill repeats at most one batch (BATCH_BYTES of journal): that
is the bound on duplicates.

Each record carries Docker's fluentd-driver layout (container_id, container_name, source, log, extra attributes,
partial_* on 16 KiB chunks) and, with ``forward-record-id``, a ``record_id`` that is the same on every resend:
the container and the journal offset of the entry's frame (of a joined line's first chunk).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from driver.frames import FrameDecoder
from driver.journal import Cursor, CursorStore, Journal
from driver.outputs.forward.client import ForwardClient, ForwardError
from driver.outputs.forward.codec import BatchBuilder, Frame, RecordEncoder
from driver.partials import merge_partials_at
from driver.sinks.base import read_frames

log = logging.getLogger(__name__)

NAME = "forward"
# Journal bytes per batch: ~1.8k short lines, ~0.25 MB of frames while in flight.
BATCH_BYTES = 64 << 10
# Until the aggregator has acknowledged something (at start, after a failure) batches are this small and none is
# prepared ahead: an outage then costs one small batch per container instead of two full ones (measured: PSS
# +76% for 10 containers during a 60 s outage with full batches, +13% with 64 KiB probes).
PROBE_BYTES = 16 << 10  # a frame longer than this (a 16 KiB chunk with its fields) is read whole
LOG_EVERY = 30.0  # seconds between repeated "aggregator unreachable" log lines (never one per line)


@dataclass
class ForwardStats:
    """Per-sink counters (the metrics endpoint reads them)."""

    forwarded: int = 0  # records written to the aggregator, resends included
    acked: int = 0  # lines acknowledged (or written, without acks) and past the saved cursor
    retried: int = 0  # records sent again after a failure
    failures: int = 0  # failed delivery attempts
    connected: bool = False
    last_error: str = ""  # why the last failed attempt failed (the status view shows it)


@dataclass
class _Batch:
    start: int
    end: int
    frames: list[Frame]
    records: int


class ForwardSink:
    name = NAME

    def __init__(self, journal: Journal, store: CursorStore, client: ForwardClient, tag: str,
                 static_fields: dict[str, str], *, event_time: bool, compress: bool, container_id: str,
                 merge_max: int | None = None, record_ids: bool = False) -> None:
        self.journal = journal
        self.store = store
        self.client = client
        self.tag = tag
        self.container_id = container_id
        self.encoder = RecordEncoder(static_fields, time_format="event_time" if event_time else "integer",
                                     record_id_key="record_id" if record_ids else None)
        self.record_ids = record_ids
        self.compress = compress
        self.merge_max = merge_max  # join 16 KiB chunks up to this many bytes; None: send chunks as they are
        self.decoder = FrameDecoder()
        self.cursor: Cursor = store.load(NAME)
        if self.cursor.pos < journal.start:
            self.cursor.pos = journal.start  # the cap took frames while the plugin was down
        self.stats = ForwardStats(acked=int(self.cursor.extra.get("acked", 0)))
        self._base = {"acked": self.stats.acked, "dropped": self.cursor.dropped_frames}  # restored lifetime counts
        self.sealed = False
        self._saved_pos = self.cursor.pos
        self._pending: _Batch | None = None  # prepared, not yet acknowledged
        self._last_complaint = 0.0
        journal.cursors[NAME] = self.cursor

    def run_counts(self) -> dict[str, int]:
        """This run's counts (the cursor restores lifetime ones; totals add runs up)."""
        return {"forwarded": self.stats.forwarded, "acked": self.stats.acked - self._base["acked"],
                "retried": self.stats.retried, "failures": self.stats.failures,
                "dropped": self.cursor.dropped_frames - self._base["dropped"]}

    def reset_run_counts(self) -> None:
        self.stats.forwarded = self.stats.retried = self.stats.failures = 0
        self._base = {"acked": self.stats.acked, "dropped": self.cursor.dropped_frames}

    @property
    def up(self) -> bool:
        return self.stats.connected

    # ---- consumer contract ---------------------------------------------------------------------------------
    @property
    def saved_pos(self) -> int:
        return self._saved_pos

    @property
    def done_pos(self) -> int:
        return self._saved_pos  # acknowledged

    def caught_up(self) -> bool:
        return self._pending is None and self.cursor.pos >= self.journal.end

    async def step(self, loop: asyncio.AbstractEventLoop, executor) -> bool:
        """Deliver one batch. False when there is nothing to send.

        The next batch is read and encoded in a worker thread while this one travels and waits for its ack, so
        the plugin and the aggregator work at the same time; it is not sent before this one is acknowledged.
        When a delivery fails, nothing is kept in memory: the cursor goes back to the last acknowledged batch
        and the journal is read again on the next attempt (the client waits its backoff first), so a sink whose
        aggregator is away costs disk, not memory."""
        probing = not self.stats.connected
        if self._pending is None:
            limit = PROBE_BYTES if probing else BATCH_BYTES
            self._pending = await loop.run_in_executor(executor, self._prepare, limit)
            if self._pending is None:
                return False
        batch = self._pending
        following = None if probing else loop.run_in_executor(executor, self._prepare, BATCH_BYTES)
        try:
            for frame in batch.frames:
                await self.client.send(frame.data, frame.chunk_id)
                self.stats.forwarded += frame.count
        except ForwardError as exc:
            taken = [batch]
            if following is not None:
                await asyncio.wait([following])  # let it finish taking from the cursor before the rewind
                if not following.exception() and following.result():
                    taken.append(following.result())
            self._failed(taken, exc)
            return True
        except BaseException:
            if following is not None:
                following.add_done_callback(lambda f: f.exception())  # closing: the saved cursor re-reads it later
            raise
        if not self.stats.connected:
            self.stats.connected = True
            if self.stats.failures:
                log.info("aggregator reachable again", extra={"sink": NAME, "address": str(self.client.address)})
        self.stats.acked += batch.records
        self._saved_pos = batch.end
        self._pending = None
        # Saved before the next batch goes, so a kill repeats at most one batch. Usually one pwrite into the page
        # cache (as the journal's splices on this thread): a trip to a worker thread would cost more than it.
        if not self._save(batch.end, in_place_only=True):
            await loop.run_in_executor(executor, self._save, batch.end)
        self._pending = await following if following is not None else None
        return True

    def _failed(self, taken: list[_Batch], exc: ForwardError) -> None:
        """Forget the batches taken since the last ack and read them again later from the journal."""
        self.stats.failures += 1
        self.stats.last_error = str(exc)
        self.stats.retried += taken[0].records
        self.stats.connected = False
        self._pending = None
        if self._saved_pos < self.journal.start:
            # The cap gave up journal under these batches while they were in memory: they are lost, and counted
            # like the cap's other drops.
            self.journal.count_lost(self.cursor, sum(b.records for b in taken), taken[-1].end - taken[0].start)
            self._saved_pos = taken[-1].end
        self.journal.rewind(self.cursor, self._saved_pos)
        now = time.monotonic()
        if now - self._last_complaint >= LOG_EVERY:
            self._last_complaint = now
            log.warning("forwarding failed; lines wait in the journal",
                        extra={"sink": NAME, "container": self.container_id[:12], "error": str(exc)})

    def _prepare(self, limit: int) -> _Batch | None:
        """Read and encode the next batch of at most `limit` journal bytes (worker thread)."""
        while True:
            start = self.cursor.pos
            offsets: list[int] | None = [] if self.record_ids else None
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
        lines = len(entries)  # counted in lines (as received), whatever merging does to records
        if self.merge_max:
            entries, offsets = merge_partials_at(entries, offsets, self.merge_max)
        builder = BatchBuilder(self.tag, compress=self.compress)
        # An entry's journal offset names it whatever batch it travels in (a resend starts with a smaller one).
        ids = [f"{self.container_id[:12]}-{at:x}" for at in offsets] if offsets is not None else None
        frames = builder.extend(self.encoder.encode_batch(entries, ids))
        last = builder.flush()
        if last is not None:
            frames.append(last)
        return _Batch(start, start + used, frames, lines)

    def _save(self, pos: int, in_place_only: bool = False) -> bool:
        """Whether it was done (see CursorStore.save); a failed save is logged and counts as done."""
        try:
            return self.store.save(self.cursor, pos=pos, extra={"acked": self.stats.acked},
                                   in_place_only=in_place_only)
        except OSError as exc:
            log.warning("could not save forward cursor", extra={"error": str(exc)})
            return True

    def flush(self) -> None:
        self._save(self._saved_pos)

    def close(self) -> None:
        self.flush()

    async def aclose(self) -> None:
        await self.client.close()
