"""One batcher per (loki-url, tenant), shared by every container that pushes there: parts handed in by the
containers' sinks become pushes of many streams, sent one at a time over one keep-alive client.

A push goes when its parts reach ``loki-batch-size`` bytes (lines and structured metadata, as the promtail
client counts), when its oldest part has waited ``loki-batch-wait``, or at once when a part is urgent: its
container stopped (sealed: no more lines will come to fill the push) or its sink has more waiting (waiting would
only slow a busy container down). Each sink awaits its part's outcome: STORED or REJECTED (its cursor moves),
or SPLIT (alone in a push Loki found too large: the sink re-reads a smaller batch). Retries happen here, on the
push in memory: at most one push is in flight, and each sink has at most one part queued, so memory is bounded
by the number of containers while Loki is away; their backlogs stay in their journals.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from driver.outputs.acked import OutputStats
from driver.outputs.loki import codec
from driver.outputs.loki.client import Backoff, LokiClient, Outcome, PushResult

log = logging.getLogger(__name__)
LOG_EVERY = 30.0  # seconds between repeated log lines about one batcher's failures


@dataclass
class LokiStats(OutputStats):
    """A Loki sink's counts (driver.outputs.acked.OutputStats): the batcher counts each push's entries in its
    part's stats (``forwarded``, ``retried``, ``failures``, ``up``), the sink the rest."""

    statuses: Counter = field(default_factory=Counter)  # HTTP status of each push holding its entries (0: none)


@dataclass
class Part:
    """One sink's entries for a push."""

    streams: list[tuple[str, bytes | bytearray]]  # (labels string, encoded entries)
    entries: int
    size: int  # line + structured metadata bytes
    stats: LokiStats
    urgent: bool = False
    done: asyncio.Future | None = None
    queued_at: float = 0.0


class Batcher:
    def __init__(self, client: LokiClient, *, batch_bytes: int, batch_wait: float, min_backoff: float,
                 max_backoff: float, backoff: Backoff | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.client = client
        self.batch_bytes = batch_bytes
        self.batch_wait = batch_wait
        self.max_backoff = max_backoff
        self.backoff = backoff or Backoff(min_backoff, max_backoff)
        self._sleep = sleep  # tests see the waits instead of spending them
        self.up = False  # Loki answered the last push (a 2xx or a final 400)
        self._queue: list[Part] = []
        self._changed = asyncio.Event()
        self._runner: asyncio.Task | None = None
        self._last_complaint = -LOG_EVERY
        self.users = 0  # sinks attached (the owner closes the batcher when none is left)

    # ---- sink side -----------------------------------------------------------------------------------------
    async def send(self, part: Part) -> PushResult:
        """Queue a part and wait until the push holding it was stored, rejected, or is to be split."""
        loop = asyncio.get_running_loop()
        part.done = loop.create_future()
        part.queued_at = loop.time()
        self._queue.append(part)
        self._changed.set()
        if self._runner is None or self._runner.done():
            self._runner = loop.create_task(self._run())
        return await asyncio.shield(part.done)

    def hurry(self, stats: LokiStats) -> None:
        """The sink owning these stats was sealed: its queued part goes without waiting for batch-wait."""
        for part in self._queue:
            if part.stats is stats:
                part.urgent = True
                self._changed.set()

    async def close(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        for part in self._queue:
            if part.done is not None and not part.done.done():
                part.done.cancel()
        self._queue.clear()
        await self.client.close()

    # ---- the push loop -------------------------------------------------------------------------------------
    def _ready(self, now: float) -> float:
        """0 when a push should go now, else how long until the oldest part has waited batch-wait."""
        if not self._queue:
            return float("inf")
        if any(p.urgent for p in self._queue) or sum(p.size for p in self._queue) >= self.batch_bytes:
            return 0.0
        return max(0.0, self._queue[0].queued_at + self.batch_wait - now)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            wait = self._ready(loop.time())
            if wait > 0:
                self._changed.clear()
                try:
                    await asyncio.wait_for(self._changed.wait(), wait)
                except TimeoutError:
                    pass
                continue
            parts, size = [], 0
            while self._queue and (not parts or size + self._queue[0].size <= self.batch_bytes):
                part = self._queue.pop(0)
                parts.append(part)
                size += part.size
            await self._deliver(parts)

    async def _deliver(self, parts: list[Part]) -> None:
        parts = [p for p in parts if not p.done.done()]  # a sink that closed meanwhile
        if not parts:
            return
        body = codec.compress(codec.push_request(codec.stream_bytes(labels, entries)
                                                 for p in parts for labels, entries in p.streams))
        attempt = 0
        while True:
            result = await self.client.push(body)
            for p in parts:
                p.stats.forwarded += p.entries
                p.stats.statuses[result.status] += 1
                if attempt:
                    p.stats.retried += p.entries
            attempt += 1
            outcome = result.outcome
            if outcome in (Outcome.STORED, Outcome.REJECTED):
                self.up = True
                self.backoff.reset()
                if outcome is Outcome.REJECTED:
                    self._complain("Loki rejected part of a push (the rest is stored; not resent)", result)
                self._resolve(parts, result)
                return
            if outcome is Outcome.SPLIT:
                self.up = True
                if len(parts) == 1:
                    self._resolve(parts, result)
                    return
                half = len(parts) // 2
                await self._deliver(parts[:half])
                await self._deliver(parts[half:])
                return
            self.up = False
            for p in parts:
                p.stats.failures += 1
                p.stats.up = False
            if outcome is Outcome.DOWN:
                self._complain("Loki refuses the pushes (check loki-url, credentials, loki-tenant-id); "
                               "lines wait in the journals", result)
                await self._sleep(self.max_backoff)
            else:
                self._complain("Loki push failed; retrying, lines wait in the journals", result)
                await self._sleep(self.backoff.next(result.retry_after))

    def _resolve(self, parts: list[Part], result: PushResult) -> None:
        for p in parts:
            p.stats.up = True
            if not p.done.done():
                p.done.set_result(result)

    def _complain(self, what: str, result: PushResult) -> None:
        now = time.monotonic()
        if now - self._last_complaint >= LOG_EVERY:
            self._last_complaint = now
            log.warning(what, extra={"sink": "loki", "url": self.client.url, "status": result.status,
                                     "error": result.message[:500]})


class Batchers:
    """The batchers of a process, one per (url, tenant); a batcher goes when its last sink does."""

    def __init__(self, make: Callable[[object], Batcher]) -> None:
        self._make = make
        self._by_key: dict[tuple, Batcher] = {}

    def attach(self, settings) -> Batcher:
        key = settings.batcher_key
        batcher = self._by_key.get(key)
        if batcher is None:
            batcher = self._by_key[key] = self._make(settings)
        batcher.users += 1
        return batcher

    async def detach(self, settings) -> None:
        key = settings.batcher_key
        batcher = self._by_key.get(key)
        if batcher is None:
            return
        batcher.users -= 1
        if batcher.users <= 0:
            del self._by_key[key]
            await batcher.close()


def make_batcher(settings) -> Batcher:
    """The batcher for a LokiSettings (its batch and backoff options; the first container's win)."""
    return Batcher(LokiClient(settings), batch_bytes=settings.batch_bytes, batch_wait=settings.batch_wait,
                   min_backoff=settings.min_backoff, max_backoff=settings.max_backoff)
