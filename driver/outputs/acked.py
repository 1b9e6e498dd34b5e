"""The part every acknowledged output shares: a journal consumer whose cursor moves only when its destination
took a batch (a forward ack, a Loki 2xx, an Elasticsearch bulk answer).

The base owns the cursor and the counts: reading and taking a batch from the journal, sending up to ``window``
before the oldest is acknowledged, preparing the next one in a worker thread while the sent ones travel, moving
and saving the cursor once a batch is acknowledged, giving batches back to the journal when a delivery fails
(counted as the cap's drops if the cap took their bytes meanwhile), and the counts the metrics show. Each output
owns its batching and its client: it turns entries into a batch (``_batch``) and delivers it (``_deliver``, or
``_send`` when its destination takes more batches before answering), and counts what its destination did with it
in ``self.stats``.

A finished container's backlog has a bound: once its last FIFO ended (the pipeline sealed the consumer), the
output delivers for ``finished_max_age`` seconds (the node-level ``finished-max-age``, counted from the end, across
restarts), then drops what is left, counted as ``finished_max_age``: a destination that never answers must not
keep a removed container's output, its warnings and its down series forever.

A kill repeats at most the batches in flight (``window`` of them; 1 unless the output pipelines, as forward): the
saved cursor is the end of the last batch acknowledged with every batch before it, whatever order the
acknowledgements came in. The counts
are lifetime counts saved with the cursor, and ``saved`` holds them as last saved: a restart continues from exactly
those, so metrics built on ``saved`` never go below a value they already showed (Prometheus would see a reset),
and ``acked`` counts each line once however often a kill made it go again.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field

from driver.frames import HEADER, MAX_FRAME, FrameDecoder, first_plausible
from driver.journal import Cursor, CursorStore, Journal
from driver.partials import unfinished_line
from driver.sinks.base import read_frames

log = logging.getLogger(__name__)

COUNTS = ("forwarded", "acked", "retried", "failures")  # OutputStats' counters, saved in the cursor's extra
SAVE_COUNTS_EVERY = 1.0  # seconds between saves of the counts while a delivery retries inside its client
FINISHED_MAX_AGE = "finished_max_age"  # the drop reason of a finished container's backlog given up


def saved_counts(cursor) -> dict[str, int]:
    """An output consumer's lifetime counts as saved in its cursor (driver.journal.Cursor, or statedir's reading
    of one): COUNTS, ``dropped`` (the journal cap's) and ``dropped_<reason>`` for the output's other reasons."""
    extra = cursor.extra
    counts = {key: int(extra.get(key, 0)) for key in COUNTS}
    counts["dropped"] = cursor.dropped_frames
    counts.update({f"dropped_{reason}": int(n) for reason, n in extra.get("dropped", {}).items()})
    counts.update({key: int(n) for key, n in extra.get("more", {}).items()})  # an output's own (_more_counts)
    return counts


@dataclass
class OutputStats:
    """One output consumer's counts (the metrics and the status view read them)."""

    forwarded: int = 0  # entries sent, resends included (each count here is over the container's lifetime)
    acked: int = 0  # lines the destination acknowledged and past the saved cursor
    retried: int = 0  # entries sent again after a failure
    failures: int = 0  # failed delivery attempts
    dropped: Counter = field(default_factory=Counter)  # lines given up, by reason (the journal cap's: the cursor's)
    up: bool = False  # the last delivery attempt succeeded
    last_error: str = ""  # why the last failed attempt failed (the status view shows it)
    # Seconds spent with the window full and more to send, waiting for the oldest ack: the time the destination's
    # acks, not this output's work, set the pace (logged when the container's logs are all delivered).
    window_full_s: float = 0.0
    batches: int = 0  # batches acknowledged since the plugin started (lines per batch: what each batch's cost buys)


@dataclass
class Batch:
    """Journal bytes [start, end) taken from the cursor, as ``lines`` entries; outputs add what they send."""

    start: int
    end: int
    lines: int


def _prepared(following) -> list[Batch]:
    """The batch a finished ``_prepare`` in a worker thread took from the cursor, if it took one."""
    if following is None or following.cancelled() or following.exception() is not None:
        return []
    return [following.result()] if following.result() is not None else []


class AckedOutput:
    """Base of an output's journal consumer (driver.sinks.base.Consumer, driver.outputs.OutputConsumer)."""

    name: str  # the output's name: its cursor file and the metrics' ``sink`` label
    BATCH_BYTES = 64 << 10  # journal bytes per batch
    # Until the destination took something (at start, after a failure) batches are this small and none is prepared
    # ahead: an outage then costs one small batch per container in memory instead of two full ones.
    PROBE_BYTES = 16 << 10
    wants_offsets = False  # whether _batch needs each entry's journal offset
    # Whether _batch joins a line's 16 KiB chunks: then a batch ends before a line whose last chunk is not in it.
    joins_chunks = False
    # Batches sent before the oldest one's acknowledgement came. More than 1 needs an output whose _send returns
    # before the destination answered (forward's acks are pipelined); others deliver one batch at a time.
    WINDOW = 1

    def __init__(self, journal: Journal, store: CursorStore, *, container_id: str,
                 stats: OutputStats | None = None) -> None:
        self.journal = journal
        self.store = store
        self.container_id = container_id
        self.decoder = FrameDecoder()
        self.cursor: Cursor = store.load(self.name)
        if self.cursor.pos < journal.start:
            self._resync_after_cap()
        self.stats = stats if stats is not None else OutputStats()
        for key in COUNTS:
            setattr(self.stats, key, int(self.cursor.extra.get(key, 0)))
        self.stats.dropped.update(self.cursor.extra.get("dropped", {}))
        self.saved = saved_counts(self.cursor)  # the counts as last saved: what metrics show
        self._sealed = False
        self._saved_pos = self.cursor.pos
        self._pending: Batch | None = None  # prepared, not yet sent
        # Sent, not yet acknowledged, oldest first, each with what settles it (``_send``'s awaitable; None while
        # it is being sent): at most ``window`` of them, so a kill repeats at most ``window`` batches.
        self._in_flight: collections.deque[list] = collections.deque()
        self.window = self.WINDOW
        self._grew: asyncio.Future | None = None  # set by journal_grew while a step waits with room in the window
        self._limit = self.BATCH_BYTES  # an output may lower it (a destination that found a batch too large)
        self.finished_max_age = 3600.0  # seconds; the pipeline sets the container's finished-max-age
        # When the container's last FIFO ended (wall clock: it counts across restarts), and the journal's end then:
        # sealed again with nothing new (`docker logs` on a stopped container attaches an empty FIFO) keeps it.
        self.finished_at: float | None = self.cursor.extra.get("finished_at")
        self._finished_end: int | None = self.cursor.extra.get("finished_end")
        self._deadline: asyncio.Timeout | None = None  # the delivery in flight's
        journal.cursors[self.name] = self.cursor
        if not os.path.exists(os.path.join(store.dir, f"{self.name}.json")):
            self._save(self.cursor.pos)  # from the start: the state files then say the container has this output

    @property
    def up(self) -> bool:
        return self.stats.up

    def _resync_after_cap(self) -> None:
        """The saved cursor lies before the journal: the cap gave up segments under it and the plugin was killed
        before it saved the cap's move. A segment starts anywhere in a frame, so go on from the first plausible
        frame in it, and count the rest of the torn frame (and the bytes before) as the cap's drop."""
        data = self.journal.read(self.journal.start, HEADER + MAX_FRAME + 12)
        at = first_plausible(data)  # None: the torn frame's end is not there yet; the decoder resyncs later
        resumed = self.journal.start + (at or 0)
        self.journal.count_lost(self.cursor, 1 if resumed > self.journal.start else 0, resumed - self.cursor.pos)
        log.warning("an output's cursor was before the journal (the cap gave up frames before a kill): resuming "
                    "at the next frame", extra={"sink": self.name, "container": self.container_id[:12],
                                                "skipped_bytes": resumed - self.cursor.pos})
        self.cursor.pos = resumed

    # ---- consumer contract ---------------------------------------------------------------------------------
    @property
    def sealed(self) -> bool:
        return self._sealed

    @sealed.setter
    def sealed(self, value: bool) -> None:
        self._sealed = value
        if value and (self.finished_at is None or self._finished_end != self.journal.end):
            self.finished_at, self._finished_end = time.time(), self.journal.end
        self._set_deadline()
        self._on_sealed(value)

    def _set_deadline(self) -> None:
        """Give the delivery in flight (if any) the finished container's deadline, or none while it runs."""
        if self._deadline is not None:
            left = self._time_left()
            self._deadline.reschedule(None if left is None else asyncio.get_running_loop().time() + max(left, 0.0))

    def _time_left(self) -> float | None:
        """Seconds left to deliver a finished container's backlog; None while the container runs."""
        if not self._sealed or self.finished_at is None:
            return None
        return self.finished_at + self.finished_max_age - time.time()

    @property
    def saved_pos(self) -> int:
        return self._saved_pos

    @property
    def done_pos(self) -> int:
        return self._saved_pos  # acknowledged

    def caught_up(self) -> bool:
        return self._pending is None and not self._in_flight and self.cursor.pos >= self.journal.end

    async def step(self, loop: asyncio.AbstractEventLoop, executor) -> bool:
        """Settle one batch: send batches until ``window`` of them are unacknowledged, then wait for the oldest.
        False when there is nothing to send.

        The next batch is read and encoded in a worker thread while the sent ones travel, so the plugin and the
        destination work at the same time. The cursor is saved at the end of the oldest batch once it is
        acknowledged, never past one that is not (a later one acknowledged first waits for it). When a delivery
        fails, nothing is kept in memory: every batch taken since the saved cursor is given back and the journal
        is read again on the next attempt, so an output whose destination is away costs disk, not memory. While
        it is away (probing) one small batch goes at a time, none prepared ahead. Behind a batch in flight only a
        whole batch goes (``_full_batch_waiting``); fewer lines wait for the acks."""
        left = self._time_left()
        if left is not None and left <= 0 and not self.caught_up():
            self._forget_in_flight(retried=False)
            await loop.run_in_executor(executor, self._give_up)
            return True
        probing = self._probing()
        window = 1 if probing else max(1, self.window)
        following = None
        try:
            while len(self._in_flight) < window:
                if self._pending is None:
                    if self._in_flight and not self._prepare_after(self._in_flight[-1][0]):
                        break
                    if not self._journal_has_more():
                        break  # no hand-off to a worker thread for an empty batch
                    if self._in_flight and not self._full_batch_waiting():
                        break  # a short batch goes once the ones in flight are acked: it will be longer then
                    if not probing:
                        await self._gather()
                    limit = min(self._limit, self.PROBE_BYTES) if probing else self._limit
                    self._pending = await loop.run_in_executor(executor, self._prepare, limit)
                    if self._pending is None:
                        break
                sending = [self._pending, None]
                self._in_flight.append(sending)  # taken from the cursor: given back with the others if need be
                self._pending = None
                sending[1] = await self._within_deadline(self._send(sending[0]))
            if not self._in_flight:
                return False
            if (not probing and self._journal_has_more() and self._prepare_after(self._in_flight[-1][0])
                    and (len(self._in_flight) == 1 or self._full_batch_waiting())):
                following = loop.run_in_executor(executor, self._prepare, self._limit)
            head = self._in_flight[0]
            if len(self._in_flight) < window and not await self._ack_or_more(loop, head):
                # New frames and room for them in the window: the next step sends them before this ack comes.
                if following is not None:
                    self._pending = await following
                return True
            waited_from = time.monotonic() if self._journal_has_more() else None  # full: len == window here
            acked = await self._within_deadline(head[1])
            if waited_from is not None:
                self.stats.window_full_s += time.monotonic() - waited_from
        except TimeoutError:  # the finished container's deadline: given back; the next step gives up the backlog
            taken = self._forget_in_flight(retried=False)
        except BaseException:
            self._give_back_later(self._forget_in_flight(retried=False), following)  # closing (or a bug)
            raise
        else:
            if acked:
                batch = self._in_flight.popleft()[0]
                self._saved_pos = batch.end
                self.stats.batches += 1
                # Saved before the next batch goes, so a kill repeats at most the window. Usually one pwrite into
                # the page cache (as the journal's splices on this thread): a worker thread would cost more.
                if not self._save(batch.end, in_place_only=True):
                    await loop.run_in_executor(executor, self._save, batch.end)
                if following is not None:
                    self._pending = await following
                return True
            taken = self._forget_in_flight(retried=True)  # what was sent after the failed one goes again too
        if following is not None:
            await asyncio.wait([following])  # let it finish taking from the cursor before the rewind
        self._give_back(taken + _prepared(following))
        # Saved at once (the position is the same) so that failures and retries count across a kill too.
        if not self._save(self._saved_pos, in_place_only=True):
            await loop.run_in_executor(executor, self._save, self._saved_pos)
        return True

    def _journal_has_more(self) -> bool:
        """Whether the journal holds bytes past the cursor (else preparing a batch would find nothing)."""
        return self.cursor.pos < self.journal.end  # a cursor before journal.start is before the end too

    def _full_batch_waiting(self) -> bool:
        """Whether the journal holds a whole batch past the cursor. With batches in flight only a whole one is
        sent before their acks come (Nagle's rule, for batches): short ones would cost the same per batch (a step,
        a worker-thread hand-off, a write, an ack, a cursor save) for fewer lines, and what waits goes within one
        ack's round trip, in the next batch."""
        return self.journal.end - self.cursor.pos >= self._limit

    async def _ack_or_more(self, loop: asyncio.AbstractEventLoop, head: list) -> bool:
        """Wait until the oldest batch is settled (True) or the journal grew (False)."""
        if not isinstance(head[1], asyncio.Future):
            head[1] = asyncio.ensure_future(head[1])
        self._grew = loop.create_future()
        try:
            await self._within_deadline(asyncio.wait([head[1], self._grew], return_when=asyncio.FIRST_COMPLETED))
        finally:
            self._grew = None
        return head[1].done()

    def journal_grew(self) -> None:
        """The pipeline put new frames in the journal: a step waiting for an ack with room left in its window wakes
        to send them (a window the journal ran dry in would stay short until the oldest ack otherwise)."""
        if self._grew is not None and not self._grew.done() and self._full_batch_waiting():
            self._grew.set_result(None)

    async def _within_deadline(self, awaitable):
        """Await a part of a delivery; a finished container's deadline ends it (TimeoutError) though the
        destination hangs or its client retries inside itself. One that began while the container ran gets the
        deadline when it ends."""
        try:
            async with asyncio.timeout(None) as self._deadline:
                self._set_deadline()
                return await awaitable
        finally:
            self._deadline = None

    def _forget_in_flight(self, retried: bool) -> list[Batch]:
        """Stop waiting for the batches in flight and return them, to be given back. ``retried``: the oldest one
        failed and the later ones go again with it (the output counts them: ``_abandon``)."""
        batches = []
        for i, (batch, settles) in enumerate(self._in_flight):
            if i and retried and settles is not None:
                self._abandon(batch)
            if asyncio.iscoroutine(settles):
                settles.close()  # one never awaited: no "never awaited" warning (a no-op on one that finished)
            elif isinstance(settles, asyncio.Future):
                settles.cancel()  # the oldest, awaited beside the journal's growth (a no-op once it is done)
            batches.append(batch)
        self._in_flight.clear()
        return batches

    def _give_back_later(self, taken: list[Batch], following) -> None:
        """Give back ``taken`` once the batch being prepared (if any) is taken from the cursor too."""
        def give_back(prepared=None) -> None:
            batches = taken + _prepared(prepared)
            if batches:
                self._give_back(batches)
        if following is None:
            give_back()
        else:
            following.add_done_callback(give_back)

    def _give_back(self, taken: list[Batch]) -> None:
        """Forget the batches taken since the last ack; the journal is read again from the saved cursor."""
        self._pending = None
        if self._saved_pos < self.journal.start:
            # The cap gave up journal under these batches while they were in memory: they are lost, and counted
            # like the cap's other drops.
            self.journal.count_lost(self.cursor, sum(b.lines for b in taken), taken[-1].end - taken[0].start)
            self._saved_pos = taken[-1].end
        self.journal.rewind(self.cursor, self._saved_pos)
        if self._saved_pos < self.journal.start:
            self._saved_pos = self.cursor.pos  # the cap moved the cursor to a frame past its cut: save that

    def _give_up(self) -> None:
        """finished-max-age passed: drop the finished container's backlog, counted (worker thread)."""
        self._pending = None
        self.journal.rewind(self.cursor, self._saved_pos)
        start, end = self.cursor.pos, self.journal.end
        lines = self.journal.count_frames(start, end)
        if not self.journal.take(self.cursor, start, end - start):
            return  # the cap moved the cursor meanwhile (and counted what it took): the next step looks again
        self.stats.dropped[FINISHED_MAX_AGE] += lines
        self._saved_pos = end
        self._save(end)
        log.warning("stopped container's backlog dropped: not delivered within finished-max-age",
                    extra={"sink": self.name, "container": self.container_id[:12], "lines": lines,
                           "max_age": self.finished_max_age})

    def _prepare(self, limit: int) -> Batch | None:
        """Take the next batch of at most ``limit`` journal bytes from the cursor and make it (worker thread)."""
        while True:
            start = self.cursor.pos
            direct = self._direct_batch(start, limit)
            if direct is not None:
                if self.journal.take(self.cursor, start, direct.end - start):
                    return direct
                continue  # the cap moved the cursor meanwhile: read from where it is now
            offsets: list[int] | None = [] if self.wants_offsets or self.joins_chunks else None
            got = read_frames(self.journal, self.decoder, start, limit, self.sealed, offsets)
            if got is None:
                if start < self.journal.start:  # its segment was deleted under us: the cap counted it
                    self.journal.skip_lost(self.cursor)
                    continue
                return None
            entries, used = got
            if used == 0:
                return None
            if self.joins_chunks:
                cut = unfinished_line(entries)
                if cut:  # the batch ends before that line, which goes whole in the next one
                    used = offsets[cut] - start
                    entries, offsets = entries[:cut], offsets[:cut]
                if not self.wants_offsets:
                    offsets = None
            if self.journal.take(self.cursor, start, used):
                return self._batch(start, start + used, entries, offsets)

    async def _saving_counts(self, delivery):
        """Await a delivery that retries inside its client for as long as the destination is away, saving the
        counts it moves (sends, failures) every SAVE_COUNTS_EVERY meanwhile: metrics show saved counts."""
        task = asyncio.ensure_future(delivery)
        try:
            while not (await asyncio.wait([task], timeout=SAVE_COUNTS_EVERY))[0]:
                self._save(self._saved_pos, in_place_only=True)  # one pwrite, or at the next ack
            return task.result()
        finally:
            task.cancel()  # closing: the saved cursor re-reads the batch later (a no-op once it is done)

    def _extra(self) -> dict:
        """What the cursor saves beside the position (an output may add its own)."""
        extra: dict = {key: getattr(self.stats, key) for key in COUNTS}
        extra["dropped"] = dict(self.stats.dropped)
        more = self._more_counts()
        if more:
            extra["more"] = more
        if self.finished_at is not None:
            extra.update(finished_at=self.finished_at, finished_end=self._finished_end)
        return extra

    def _save(self, pos: int, in_place_only: bool = False) -> bool:
        """Whether it was done (see CursorStore.save); a failed save is logged and counts as done."""
        extra = self._extra()
        cap_dropped = self.cursor.dropped_frames  # read first: the cap may add more, saved with it (never less)
        try:
            done = self.store.save(self.cursor, pos=pos, extra=extra, in_place_only=in_place_only)
        except OSError as exc:
            log.warning("could not save an output's cursor", extra={"sink": self.name, "error": str(exc)})
            return True
        if done:
            self.cursor.extra = extra
            self.saved = {**saved_counts(self.cursor), "dropped": cap_dropped}
        return done

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

    def _direct_batch(self, start: int, limit: int) -> Batch | None:
        """The batch of at most ``limit`` journal bytes from ``start`` made straight from the frames, for an output
        that can skip decoding them into entries (worker thread); None: the usual way, read_frames then _batch."""
        return None

    async def _deliver(self, batch: Batch) -> bool:
        """Send the batch and count what the destination did with it: True when it is done with (the cursor
        moves past it), False to give it back to the journal and read it again later."""
        raise NotImplementedError

    async def _send(self, batch: Batch):
        """Send the batch; returns an awaitable of ``_deliver``'s answer (True: acknowledged). An output whose
        destination takes more batches before answering (a WINDOW over 1) returns once it is written and counts
        what happened in the awaitable. The default delivers the whole batch when awaited."""
        return self._deliver(batch)

    def _abandon(self, batch: Batch) -> None:
        """A batch sent whose answer is no longer awaited: an earlier one failed, so it goes again with it."""

    def _probing(self) -> bool:
        """Whether the destination is away (small batches, one at a time, none prepared ahead)."""
        return not self.stats.up

    async def _gather(self) -> None:
        """Before a batch is taken (the destination is up): an output may wait here for more lines to arrive."""

    def _prepare_after(self, batch: Batch) -> bool:
        """Whether to prepare the next batch while this one travels."""
        return True

    def _more_counts(self) -> dict[str, int]:
        """The output's own lifetime counts, saved with the cursor and shown as saved (``indexed``,
        ``duplicates``, ``status_<code>``: driver.metrics.detail_families); restore them from
        ``self.cursor.extra["more"]``."""
        return {}

    def _on_sealed(self, sealed: bool) -> None:
        """The pipeline sealed the consumer (its container's last FIFO ended) or unsealed it (a new FIFO)."""
