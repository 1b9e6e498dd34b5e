"""One batcher per (loki-url, tenant), shared by every container that pushes there: parts handed in by the
containers' sinks become pushes of many streams, sent one at a time over one keep-alive client.

A push goes when its parts reach ``loki-batch-size`` bytes (lines and structured metadata, as the promtail
client counts), when its oldest part has waited ``loki-batch-wait``, or at once when a part is urgent: its
container stopped (sealed: no more lines will come to fill the push) or its sink has more waiting (waiting would
only slow a busy container down). Each sink awaits its part's outcome: STORED or REJECTED (its cursor moves),
or SPLIT (alone in a push Loki found too large: the sink re-reads a smaller batch). Retries happen here, on the
push in memory, one push in flight at a time (driver.outputs.batching.PartQueue: the queue and its timing).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from driver.outputs.acked import OutputStats
from driver.outputs.batching import Backoff, PartQueue
from driver.outputs.loki import codec
from driver.outputs.loki.client import LokiClient, Outcome, PushResult


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


class Batcher(PartQueue):
    sink_name = "loki"

    def __init__(self, client: LokiClient, *, batch_bytes: int, batch_wait: float, min_backoff: float,
                 max_backoff: float, backoff: Backoff | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        super().__init__(client, batch_wait=batch_wait, backoff=backoff or Backoff(min_backoff, max_backoff),
                         sleep=sleep)
        self.batch_bytes = batch_bytes
        self.max_backoff = max_backoff

    @property
    def request_bytes(self) -> int:
        return self.batch_bytes

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


def make_batcher(settings) -> Batcher:
    """The batcher for a LokiSettings (its batch and backoff options; the first container's win)."""
    return Batcher(LokiClient(settings), batch_bytes=settings.batch_bytes, batch_wait=settings.batch_wait,
                   min_backoff=settings.min_backoff, max_backoff=settings.max_backoff)
