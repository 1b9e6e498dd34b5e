"""What the request-batching outputs (Loki, Elasticsearch) share: a queue of parts handed in by the containers'
sinks, made into requests to one destination, one request in flight at a time; the backoff between retries; and
the registry that gives the containers writing to one destination the same batcher.

A part is one sink's lines for a request. The queue needs of it ``size`` (bytes counted against the request
limit), ``urgent``, ``stats`` (the sink's OutputStats), and sets ``done`` (the future the sink awaits) and
``queued_at``. Each sink has at most one part queued, so memory is bounded by the number of containers while the
destination is away; their backlogs stay in their journals.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable

LOG_EVERY = 30.0  # seconds between repeated log lines about one batcher's failures


class Backoff:
    """dskit's backoff, as Grafana's Loki driver uses it: retry n waits a uniform time in [min·2^(n-1), min·2^n),
    at most max, and at least the server's Retry-After. ``rng`` is injectable for tests."""

    def __init__(self, min_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self.min_s, self.max_s = min_s, max_s
        self.retries = 0
        self._rng = rng or random.Random()

    def next(self, retry_after: float | None = None) -> float:
        self.retries += 1
        low = self.min_s * 2 ** (self.retries - 1)
        delay = min(self._rng.uniform(low, 2 * low) if low < self.max_s else self.max_s, self.max_s)
        return max(delay, retry_after or 0.0)

    def reset(self) -> None:
        self.retries = 0


class PartQueue:
    """Parts become a request when they reach ``request_bytes``, when the oldest has waited ``batch_wait``, or at
    once when one is urgent (its container stopped: nothing more will come to fill the request; or its sink has
    more waiting: waiting would only slow a busy container down). A subclass sends a request's parts and settles
    them (``_deliver``) and names its size limit."""

    sink_name = ""  # in log lines

    def __init__(self, client, *, batch_wait: float, backoff: Backoff,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.client = client
        self.batch_wait = batch_wait
        self.backoff = backoff
        self._sleep = sleep  # tests see the waits instead of spending them
        self.up = False  # the destination answered the last request
        self._queue: list = []
        self._in_flight: list = []  # the parts of the request being delivered
        self._changed = asyncio.Event()
        self._runner: asyncio.Task | None = None
        self._last_complaint = -LOG_EVERY
        self.users = 0  # sinks attached (Batchers closes the batcher when none is left)

    @property
    def request_bytes(self) -> int:
        raise NotImplementedError

    # ---- sink side -----------------------------------------------------------------------------------------
    async def send(self, part):
        """Queue a part and wait until the request loop settled it (what ``done`` is set to)."""
        loop = asyncio.get_running_loop()
        part.done = loop.create_future()
        part.queued_at = loop.time()
        self._queue.append(part)
        self._changed.set()
        if self._runner is None or self._runner.done():
            self._runner = loop.create_task(self._run())
        return await asyncio.shield(part.done)

    def hurry(self, stats) -> None:
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

    # ---- the request loop ----------------------------------------------------------------------------------
    def _ready(self, now: float) -> float:
        """0 when a request should go now, else how long until the oldest part has waited batch-wait."""
        if not self._queue:
            return float("inf")
        if any(p.urgent for p in self._queue) or sum(p.size for p in self._queue) >= self.request_bytes:
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
            parts, size, limit = [], 0, self.request_bytes
            while self._queue and (not parts or size + self._queue[0].size <= limit):
                part = self._queue.pop(0)
                parts.append(part)
                size += part.size
            self._in_flight = parts
            try:
                await self._deliver(parts)
            finally:
                self._in_flight = []

    async def _deliver(self, parts: list) -> None:
        """Send the parts until each is settled (its ``done`` set), retrying with backoff."""
        raise NotImplementedError

    def _complain(self, what: str, result) -> None:
        """Log a failure, at most once per LOG_EVERY (``result``: the client's answer, its status and message)."""
        now = time.monotonic()
        if now - self._last_complaint >= LOG_EVERY:
            self._last_complaint = now
            logging.getLogger(type(self).__module__).warning(  # the output's logger
                what, extra={"sink": self.sink_name, "url": self.client.url, "status": result.status,
                             "error": result.message[:500]})


class Batchers:
    """The batchers of a process, one per destination (``settings.batcher_key``); a batcher goes when its last
    sink does."""

    def __init__(self, make: Callable[[object], PartQueue]) -> None:
        self._make = make
        self._by_key: dict[tuple, PartQueue] = {}

    def attach(self, settings) -> PartQueue:
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
