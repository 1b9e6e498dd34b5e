"""Helpers of the batching outputs' sink tests (Loki, Elasticsearch): a coroutine run with a bound, backoff waits
recorded instead of spent, and containers' sinks stepped until each has nothing left to send."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor


def run(coro, timeout=60):
    """Run a test's coroutine; the timeout bounds a failure, it is not a wait for success."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


class Waits:
    """Records the batcher's backoff waits instead of spending them (a retry follows at once)."""

    def __init__(self, gated: bool = False) -> None:
        self.waits: list[float] = []
        self.gate = asyncio.Event() if gated else None  # closed: a wait lasts until the test opens it

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(0)


async def drain(*containers, executor=None) -> None:
    """Step each container's ``sink`` until it has nothing to send (each on its own task, as the pipeline does)."""
    loop = asyncio.get_running_loop()
    executor = executor or ThreadPoolExecutor(2)

    async def one(c):
        while await c.sink.step(loop, executor):
            pass

    await asyncio.gather(*(one(c) for c in containers))
