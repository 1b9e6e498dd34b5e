"""When a live container's consumers run: at the next tick of one process-wide clock, unless something is waiting.

dockerd writes one frame per line. Woken per write, every consumer of a quiet container (json.log, each output)
took a hand-off to a worker thread for a batch of one line: at 100 containers writing 10 lines/s that cost
0.80 CPU-s per 1,000 lines, most of it wake-ups. A consumer whose backlog is small waits instead for the next tick
of one ``Ticker`` shared by every pipeline (one timer for the process, armed only while someone waits), and then
takes everything that arrived meanwhile in one batch. What must not wait does not: a stopped container's last
lines (StopLogging drains promptly), a backlog of ``GATHER_BYTES`` or more (a busy container's batches are full
anyway), and json.log while `docker logs` reads or follows it.
"""

from __future__ import annotations

import asyncio
import math

PERIOD = 0.5  # seconds between ticks: how late a quiet container's lines can be in an output
GATHER_BYTES = 16 << 10  # a backlog this large goes at once: waiting would only make the batch larger


class Ticker:
    """Futures joined before a tick are resolved at it. Ticks fall on multiples of ``period`` of the loop's clock,
    so every consumer waiting shares the same timer and one wake-up; ``period=None``: only ``tick()`` ticks (tests).
    Loop thread only."""

    def __init__(self, period: float | None = PERIOD) -> None:
        self.period = period
        self.ticks = 0
        self._waiting: list[asyncio.Future] = []
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the timer's

    def join(self, waiter: asyncio.Future) -> None:
        """Resolve ``waiter`` at the next tick (one resolved earlier by its owner is left alone)."""
        loop = waiter.get_loop()
        if loop is not self._loop:  # another loop (each test's asyncio.run): the old one's timer never fires
            self._loop, self._timer, self._waiting = loop, None, []
        self._waiting.append(waiter)
        if self._timer is None and self.period is not None:
            at = (math.floor(loop.time() / self.period) + 1) * self.period
            self._timer = loop.call_at(at, self.tick)

    def tick(self) -> None:
        self._timer = None
        self.ticks += 1
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            if not waiter.done():
                waiter.set_result(None)

    @property
    def waiting(self) -> int:
        """Waiters not resolved yet."""
        return sum(not w.done() for w in self._waiting)


_process_ticker: Ticker | None = None


def process_ticker() -> Ticker:
    """The one ticker every pipeline of the plugin process shares."""
    global _process_ticker
    if _process_ticker is None:
        _process_ticker = Ticker()
    return _process_ticker
