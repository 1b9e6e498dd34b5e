"""An in-process forward receiver for unit tests: the records it got, and the server to point clients at."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from driver.receiver import Receiver, ReceiverConfig

LOOPBACK = "tcp://127.0.0.1:0"


@contextlib.asynccontextmanager
async def receiver(**config) -> AsyncIterator[tuple[Receiver, list[dict]]]:
    records: list[dict] = []
    server = Receiver(ReceiverConfig(**{"listen": LOOPBACK, **config}), records.append)
    await server.start()
    try:
        yield server, records
    finally:
        await server.stop()
