"""One container's data path: FIFO --splice--> journal --cursors--> json.log writer and the outputs turned on.

The event loop only splices; each consumer runs its batches in a worker thread, woken when the journal grows, so
neither disk nor network work ever sits between the FIFO and the journal. A live container's consumer with a small
backlog waits for the process-wide tick first (driver.gather): one batch per tick instead of one per line.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import Executor
from contextlib import contextmanager

from driver import outputs
from driver.fifo import FifoSource
from driver.gather import GATHER_BYTES, Ticker, process_ticker
from driver.info import LogInfo, extra_attributes, render_tag
from driver.journal import CursorStore, Journal, JournalFull
from driver.jsonfile import encode_attrs
from driver.logsetup import Throttled
from driver.options import Options
from driver.settings import Settings
from driver.sinks.base import Consumer
from driver.sinks.jsonlog import JsonLogWriter, log_path
from driver.stats import ContainerStats

log = logging.getLogger(__name__)

RETRY_AFTER = 1.0  # seconds before a consumer stopped by a full disk tries again
# An idle consumer whose position is not saved yet saves it after this long: metrics show saved counts (they never
# go back after a kill), so a container that went quiet must not keep its last lines out of them.
SAVE_WHEN_IDLE = 1.0


class Pipeline:
    def __init__(self, info: LogInfo, opts: Options, settings: Settings, executor: Executor,
                 loop: asyncio.AbstractEventLoop, on_finished, shared: outputs.Shared | None = None,
                 after_restart: bool = False, ticker: Ticker | None = None) -> None:
        self.info = info
        self.opts = opts
        self.container_id = info.container_id
        self.dir = os.path.join(settings.state_dir, "containers", info.container_id)
        self.stats = ContainerStats(info.container_id)
        self._loop = loop
        self._executor = executor
        self._ticker = ticker or process_ticker()
        self._gathering: dict[str, asyncio.Future] = {}  # consumer → its wait for the tick, while it waits
        self._json_log_wanted = 0  # docker logs reads and follows under way: json.log then goes at once
        self._on_finished = on_finished
        cap = opts["journal-max-size"]
        # Segments are the unit the cap gives up: keep several under the cap so it bites close to its value.
        self.journal = Journal(os.path.join(self.dir, "journal"), segment_bytes=max(64 << 10, min(8 << 20, cap // 8)),
                               max_bytes=cap)
        store = self.store = CursorStore(os.path.join(self.dir, "cursors"), self.journal.end)
        self.jsonlog = self._make_jsonlog(settings, store)
        # Each output its own consumer: own cursor, backlog and failures, so a dead destination delays no other.
        container = outputs.Container(info, opts, self.journal, store, log_path(settings.log_root, info.container_id))
        self.outputs: list[Consumer] = outputs.build(container, shared or outputs.Shared())
        for output in self.outputs:
            output.finished_max_age = opts["finished-max-age"]  # one bound for every output (driver.outputs.acked)
        self.consumers: list[Consumer] = [self.jsonlog, *self.outputs]
        if after_restart:  # a power cut's zero-filled pages: cut before any new frame lands behind them
            self.journal.cut_zero_tail()
        self.fifo: FifoSource | None = None
        self._wake = {c.name: asyncio.Event() for c in self.consumers}
        # Outputs with a window of batches in flight send new frames while they wait for an ack (acked.py).
        self._grew = [(o, o.journal_grew) for o in self.outputs if hasattr(o, "journal_grew")]
        self._idle = {c.name: asyncio.Event() for c in self.consumers}
        self._behind_since: dict[str, float] = {}  # consumer → loop time it last fell behind
        self._capping = False
        self._cap_warning = Throttled(log)
        self.json_log_target = 0  # the journal's end when json_log_caught_up() was last called
        self._closing = False
        self._finisher: asyncio.Task | None = None  # the one task that closes the pipeline once it is idle
        self.closed = asyncio.Event()
        self._tasks = [loop.create_task(self._run(c)) for c in self.consumers]
        self.poke()  # a restart may find work left in the journal

    def _make_jsonlog(self, settings: Settings, store: CursorStore) -> JsonLogWriter:
        attrs = extra_attributes(self.info, self.opts)
        if self.opts["tag"] is not None:
            attrs["tag"] = render_tag(self.opts["tag"], self.info)
        path = log_path(settings.log_root, self.container_id)
        return JsonLogWriter(self.journal, store, path, self.opts["max-size"], self.opts["max-file"],
                             self.opts["compress"], encode_attrs(attrs), self.stats)

    # ---- FIFO side (event loop) ----------------------------------------------------------------------------
    def attach(self, path: str) -> None:
        """Start draining a FIFO. A container has one live FIFO at a time: a new one (restart, live-restore)
        arrives only after dockerd closed the old logger, so the old pipe is emptied into the journal first."""
        if self.fifo is not None:
            old = self.fifo
            old.drain()
            old.close()
            log.info("new FIFO for container: previous one drained and closed",
                     extra={"container": self.container_id[:12], "old": old.path, "new": path})
        self.fifo = FifoSource(path, self.journal, self._on_data, self._on_eof, self._on_dropped)
        for c in self.consumers:
            c.sealed = False
        self.fifo.start(self._loop)

    def stop(self, path: str) -> None:
        """StopLogging: everything dockerd wrote is in the pipe now; move it, EOF follows after the reply."""
        if self.fifo is not None and self.fifo.path == path:
            self.fifo.drain()

    def _on_data(self) -> None:
        self.poke()
        self._check_cap()

    def _check_cap(self) -> None:
        if not self._capping and self.journal.over_cap():
            self._capping = True
            self._loop.create_task(self._enforce_cap())

    def _on_eof(self, fifo: FifoSource) -> None:
        if fifo is self.fifo:
            self.seal()

    def seal(self) -> None:
        """No more bytes will come: finish the journal, then close (unless a new FIFO arrives first)."""
        self.fifo = None
        for c in self.consumers:
            c.sealed = True
        self.poke()
        # Sealed again (dockerd's empty Start/Stop pair for `docker logs` while the backlog drains): the finisher
        # already waiting serves both; a second one would close the pipeline twice.
        if self._finisher is None or self._finisher.done():
            self._finisher = self._loop.create_task(self._finish_when_idle())

    def _on_dropped(self, counts: tuple[int, int, int, int, int]) -> None:
        self.stats.unjournaled(*counts)

    async def _enforce_cap(self) -> None:
        try:
            # json.log is only behind for a moment unless its disk is full: then the cap applies to it too. What it
            # protects is its *saved* position: a kill replays from there, so the frames after it must still exist.
            protect = None if self.jsonlog.disk_full else self.jsonlog.saved_pos
            if protect is not None and protect < self.jsonlog.written_pos:
                await self._loop.run_in_executor(self._executor, self.jsonlog.save_between_batches)
                protect = self.jsonlog.saved_pos
            lost = await self._loop.run_in_executor(self._executor, self.journal.enforce_cap, protect)
            for name, frames, nbytes in lost:
                if name == self.jsonlog.name:
                    self.stats.dropped("journal_cap", frames, nbytes)
                self._cap_warning.warning("journal cap reached: oldest unsent lines dropped (count: since the "
                                          "last such line)", frames, container=self.container_id[:12],
                                          consumer=name)
        finally:
            self._capping = False

    # ---- consumer side ----------------------------------------------------------------------------------------
    def poke(self) -> None:
        now = self._loop.time()
        for c in self.consumers:
            name = c.name
            self._idle[name].clear()
            self._behind_since.setdefault(name, now)
            waiter = self._gathering.get(name)
            if waiter is None:
                self._wake[name].set()
            elif self._must_go(c) and not waiter.done():
                waiter.set_result(None)  # the batch it takes at the tick takes these frames too, so no wake
        for output, grew in self._grew:
            if self._must_go(output):  # else the next step after the ack sends them, in a larger batch
                grew()

    def _must_go(self, consumer: Consumer) -> bool:
        """Whether the consumer steps now rather than at the next tick (driver.gather)."""
        if self._closing or consumer.sealed or self.journal.end - consumer.cursor.pos >= GATHER_BYTES:
            return True
        return consumer is self.jsonlog and self._json_log_wanted > 0

    def _hurry(self) -> None:
        """Every consumer waiting for the tick steps now."""
        for waiter in self._gathering.values():
            if not waiter.done():
                waiter.set_result(None)

    async def _gather(self, consumer: Consumer) -> None:
        """Wait for the next tick unless the consumer must go now (poke() and _hurry() end the wait early)."""
        if self._must_go(consumer):
            return
        waiter = self._gathering[consumer.name] = self._loop.create_future()
        self._ticker.join(waiter)
        try:
            await waiter
        finally:
            del self._gathering[consumer.name]

    @contextmanager
    def json_log_wanted(self):
        """While someone reads or follows json.log (`docker logs`, `docker logs -f`), it is written as lines arrive."""
        self._json_log_wanted += 1
        self.poke()
        try:
            yield
        finally:
            self._json_log_wanted -= 1

    async def _run(self, consumer: Consumer) -> None:
        wake, idle = self._wake[consumer.name], self._idle[consumer.name]
        tried = None  # the position an idle save was last tried at (a full disk: not again every second)
        while True:
            if consumer.cursor.pos in (consumer.saved_pos, tried) or not idle.is_set():
                await wake.wait()
            else:
                try:
                    await asyncio.wait_for(wake.wait(), SAVE_WHEN_IDLE)
                except TimeoutError:  # in this task, so never beside a step of the same consumer
                    tried = consumer.cursor.pos
                    await self._loop.run_in_executor(self._executor, consumer.flush)
                    continue
            wake.clear()
            if not self._closing:
                await self._gather(consumer)
            if self._closing:
                await self._last_steps(consumer)
                return
            try:
                while await consumer.step(self._loop, self._executor):
                    self._release()
            except (OSError, JournalFull) as exc:
                log.debug("consumer paused", extra={"consumer": consumer.name, "error": str(exc)})
                self._loop.call_later(RETRY_AFTER, self.poke)
                continue
            except Exception:
                log.exception("consumer failed; retrying", extra={"consumer": consumer.name})
                self._loop.call_later(RETRY_AFTER, self.poke)
                continue
            self._release()
            if not wake.is_set():
                idle.set()
                if consumer.caught_up():
                    self._behind_since.pop(consumer.name, None)

    async def _last_steps(self, consumer: Consumer) -> None:
        """Closing: deliver what is left (close() cancels this after its grace period)."""
        try:
            while await consumer.step(self._loop, self._executor):
                self._release()
        except Exception as exc:  # noqa: BLE001 - closing anyway; the saved cursor says where to resume
            log.warning("consumer could not finish before closing", extra={"consumer": consumer.name,
                                                                             "error": str(exc)})

    def _release(self) -> None:
        self.journal.release(min(c.saved_pos for c in self.consumers))
        self._check_cap()  # json.log moving on may let the cap give up what it protected

    def lag_seconds(self, name: str) -> float:
        """How long the consumer has had work waiting (0 while caught up)."""
        since = self._behind_since.get(name)
        return 0.0 if since is None else max(0.0, self._loop.time() - since)

    async def json_log_caught_up(self, limit: float) -> bool:
        """Wait until json.log holds what the FIFO and the journal held when called (ReadLogs reads right after).
        False after ``limit`` seconds, or at once while json.log's writes fail (its disk is full): see
        ``json_log_target`` for what it lacks."""
        if self.fifo is not None:
            self.fifo.drain()  # lines already written to the FIFO count, though the reader may be pausing
        target = self.json_log_target = self.journal.end
        with self.json_log_wanted():
            deadline = self._loop.time() + limit
            while self.jsonlog.written_pos < target and self.jsonlog.cursor.pos >= self.journal.start:
                if self._loop.time() >= deadline or self.jsonlog.failing:
                    return False
                await asyncio.sleep(0.005)
            return True

    async def idle(self) -> None:
        """Wait until every consumer has caught up with the journal."""
        for c in self.consumers:
            await self._idle[c.name].wait()

    async def _finish_when_idle(self) -> None:
        while True:
            await self.idle()
            if self.fifo is not None:
                return  # a new FIFO arrived meanwhile (restart): the pipeline lives on
            if all(c.caught_up() for c in self.consumers):
                break
            await asyncio.sleep(0.05)
            self.poke()
        await self.close()
        # One line per container, when its logs are all delivered: what each output waited for (the bench reads it).
        log.info("container's logs delivered", extra={
            "container": self.container_id[:12], "lines": self.jsonlog.stats.lines_written,
            **{f"{o.name}_window_full_s": round(o.stats.window_full_s, 3)
               for o in self.outputs if hasattr(getattr(o, "stats", None), "window_full_s")},
            **{f"{o.name}_batches": o.stats.batches
               for o in self.outputs if hasattr(getattr(o, "stats", None), "batches")}})
        self._on_finished(self)

    async def close(self, grace: float = 5.0) -> None:
        """Stop consumers and release files; the FIFO is left to the caller.

        Consumers get ``grace`` seconds to finish what they are doing (json.log catches up in far less); a sink
        still waiting for an aggregator then is cancelled: its saved cursor marks where the next start resumes.
        Closing again (a finisher and SIGTERM at once) waits for the first close: files are closed exactly once."""
        if self._closing:
            await self.closed.wait()
            return
        self._closing = True
        for event in self._wake.values():
            event.set()
        self._hurry()
        _, pending = await asyncio.wait(self._tasks, timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._loop.run_in_executor(self._executor, self._close_sync)
        for c in self.consumers:
            await c.aclose()
        self.closed.set()

    def saved_counts(self) -> tuple[ContainerStats, dict[str, dict[str, int]]]:
        """The container's lifetime counts as last saved with its cursors (json.log's; each output's, by name).

        A restart after a kill continues from exactly these, so metrics built on them never go back; the live
        counts run ahead by at most one save (json.log's: a second; an output's: one batch or one second)."""
        stats = ContainerStats(self.container_id)
        stats.restore(self.jsonlog.cursor.extra.get("stats", {}))
        return stats, {c.name: dict(c.saved) for c in self.outputs}

    @property
    def closing(self) -> bool:
        return self._closing

    def _close_sync(self) -> None:
        for c in self.consumers:
            c.close()
        # Worker thread: no cap task from here. The FIFO is closed or at EOF, so the last segment can go too.
        self.journal.release(min(c.saved_pos for c in self.consumers), closing=True)
        self.journal.close()
        self.store.close()
