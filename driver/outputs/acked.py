"""The part every acknowledged output shares: a journal consumer whose cursor moves only when its destination
took a batch (a forward ack, a Loki 2xx, an Elasticsearch bulk answer).

The base owns the cursor and the counts: reading and taking a batch from the journal, preparing the next one in a
worker thread while this one travels, moving and saving the cursor once a batch is acknowledged, giving batches
back to the journal when a delivery fails (counted as the cap's drops if the cap took their bytes meanwhile), and
the counts the metrics show. Each output owns its batching and its client: it turns entries into a batch
(``_batch``) and delivers it (``_deliver``), and counts what its destination did with it in ``self.stats``.

A kill repeats at most the batches in flight: the saved cursor is the end of the last acknowledged one.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field

from driver.frames import FrameDecoder
from driver.journal import Cursor, CursorStore, Journal
from driver.sinks.base import read_frames

log = logging.getLogger(__name__)


@dataclass
class OutputStats:
    """One output consumer's counts (the metrics and the status view read them)."""

    forwarded: int = 0  # entries sent, resends included
    acked: int = 0  # lines the destination acknowledged and past the saved cursor
    retried: int = 0  # entries sent again after a failure
    failures: int = 0  # failed delivery attempts
    dropped: Counter = field(default_factory=Counter)  # lines given up, by reason (the journal cap's: the cursor's)
    up: bool = False  # the last delivery attempt succeeded
    last_error: str = ""  # why the last failed attempt failed (the status view shows it)


@dataclass
class Batch:
    """Journal bytes [start, end) taken from the cursor, as ``lines`` entries; outputs add what they send."""

    start: int
    end: int
    lines: int


class AckedOutput:
    """Base of an output's journal consumer (driver.sinks.base.Consumer, driver.outputs.OutputConsumer)."""

    name: str  # the output's name: its cursor file and the metrics' ``sink`` label
    BATCH_BYTES = 64 << 10  # journal bytes per batch
    # Until the destination took something (at start, after a failure) batches are this small and none is prepared
    # ahead: an outage then costs one small batch per container in memory instead of two full ones.
    PROBE_BYTES = 16 << 10
    wants_offsets = False  # whether _batch needs each entry's journal offset

    def __init__(self, journal: Journal, store: CursorStore, *, container_id: str,
                 stats: OutputStats | None = None) -> None:
        self.journal = journal
        self.store = store
        self.container_id = container_id
        self.decoder = FrameDecoder()
        self.cursor: Cursor = store.load(self.name)
        if self.cursor.pos < journal.start:
            self.cursor.pos = journal.start  # the cap took frames while the plugin was down
        self.stats = stats if stats is not None else OutputStats()
        self.stats.acked = int(self.cursor.extra.get("acked", 0))
        self.stats.dropped.update(self.cursor.extra.get("dropped", {}))
        self._base = self._lifetime()  # restored counts: run_counts() are this run's
        self._sealed = False
        self._saved_pos = self.cursor.pos
        self._pending: Batch | None = None  # prepared, not yet acknowledged
        self._limit = self.BATCH_BYTES  # an output may lower it (a destination that found a batch too large)
        journal.cursors[self.name] = self.cursor

    # ---- counts ----------------------------------------------------------------------------------------------
    def _lifetime(self) -> dict[str, int]:
        return {"acked": self.stats.acked, "dropped": self.cursor.dropped_frames,
                **{f"dropped_{k}": v for k, v in self.stats.dropped.items()}}

    def run_counts(self) -> dict[str, int]:
        """This run's counts in the outputs' keys (driver.outputs.OutputConsumer): the cursor restores lifetime
        ones; totals add runs up."""
        counts = {k: v - self._base.get(k, 0) for k, v in self._lifetime().items()}
        counts.update(forwarded=self.stats.forwarded, retried=self.stats.retried, failures=self.stats.failures)
        return counts

    def reset_run_counts(self) -> None:
        self.stats.forwarded = self.stats.retried = self.stats.failures = 0
        self._base = self._lifetime()

    @property
    def up(self) -> bool:
        return self.stats.up

    # ---- consumer contract ---------------------------------------------------------------------------------
    @property
    def sealed(self) -> bool:
        return self._sealed

    @sealed.setter
    def sealed(self, value: bool) -> None:
        self._sealed = value
        self._on_sealed(value)

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

        The next batch is read and encoded in a worker thread while this one travels, so the plugin and the
        destination work at the same time; it is not sent before this one is acknowledged. When a delivery fails,
        nothing is kept in memory: the cursor goes back to the last acknowledged batch and the journal is read
        again on the next attempt, so an output whose destination is away costs disk, not memory."""
        probing = self._probing()
        if self._pending is None:
            limit = min(self._limit, self.PROBE_BYTES) if probing else self._limit
            self._pending = await loop.run_in_executor(executor, self._prepare, limit)
            if self._pending is None:
                return False
        batch = self._pending
        following = None
        if not probing and self._prepare_after(batch):
            following = loop.run_in_executor(executor, self._prepare, self._limit)
        try:
            acked = await self._deliver(batch)
        except BaseException:
            if following is not None:
                following.add_done_callback(lambda f: f.exception())  # closing: the saved cursor re-reads it later
            raise
        if not acked:
            taken = [batch]
            if following is not None:
                await asyncio.wait([following])  # let it finish taking from the cursor before the rewind
                if not following.exception() and following.result():
                    taken.append(following.result())
            self._give_back(taken)
            return True
        self._saved_pos = batch.end
        self._pending = None
        # Saved before the next batch goes, so a kill repeats at most one batch. Usually one pwrite into the page
        # cache (as the journal's splices on this thread): a trip to a worker thread would cost more than it.
        if not self._save(batch.end, in_place_only=True):
            await loop.run_in_executor(executor, self._save, batch.end)
        self._pending = await following if following is not None else None
        return True

    def _give_back(self, taken: list[Batch]) -> None:
        """Forget the batches taken since the last ack; the journal is read again from the saved cursor."""
        self._pending = None
        if self._saved_pos < self.journal.start:
            # The cap gave up journal under these batches while they were in memory: they are lost, and counted
            # like the cap's other drops.
            self.journal.count_lost(self.cursor, sum(b.lines for b in taken), taken[-1].end - taken[0].start)
            self._saved_pos = taken[-1].end
        self.journal.rewind(self.cursor, self._saved_pos)

    def _prepare(self, limit: int) -> Batch | None:
        """Take the next batch of at most ``limit`` journal bytes from the cursor and make it (worker thread)."""
        while True:
            start = self.cursor.pos
            offsets: list[int] | None = [] if self.wants_offsets else None
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
                return self._batch(start, start + used, entries, offsets)

    def _save(self, pos: int, in_place_only: bool = False) -> bool:
        """Whether it was done (see CursorStore.save); a failed save is logged and counts as done."""
        try:
            return self.store.save(self.cursor, pos=pos, extra={"acked": self.stats.acked,
                                                                  "dropped": dict(self.stats.dropped)},
                                   in_place_only=in_place_only)
        except OSError as exc:
            log.warning("could not save an output's cursor", extra={"sink": self.name, "error": str(exc)})
            return True

    def flush(self) -> None:
        self._save(self._saved_pos)

    def close(self) -> None:
        self.flush()

    async def aclose(self) -> None:
        """Let go of the output's client (an output with one overrides this)."""

    # ---- what each output provides -----------------------------------------------------------------------------
    def _batch(self, start: int, end: int, entries: list[tuple], offsets: list[int] | None) -> Batch:
        """The batch of journal bytes [start, end) holding ``entries`` (worker thread)."""
        raise NotImplementedError

    async def _deliver(self, batch: Batch) -> bool:
        """Send the batch and count what the destination did with it: True when it is done with (the cursor
        moves past it), False to give it back to the journal and read it again later."""
        raise NotImplementedError

    def _probing(self) -> bool:
        """Whether the destination is away (small batches, none prepared ahead)."""
        return not self.stats.up

    def _prepare_after(self, batch: Batch) -> bool:
        """Whether to prepare the next batch while this one travels."""
        return True

    def _on_sealed(self, sealed: bool) -> None:
        """The pipeline sealed the consumer (its container's last FIFO ended) or unsealed it (a new FIFO)."""
