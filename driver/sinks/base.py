"""The contract every journal consumer (json.log writer, forward sink; Loki and Elasticsearch later) follows.

A consumer owns a cursor in its container's journal. The pipeline awaits ``step()`` whenever the journal grew;
``step`` does one bounded batch (file and CPU work in the executor, network I/O on the loop) and says whether more
may be waiting. ``saved_pos`` is the position made durable (cursor saved after json.log was written or a batch was
acknowledged): segments before every consumer's saved position are deleted. ``done_pos`` is what is written or
acknowledged now (the backlog metric). ``flush()`` saves the cursor; ``close()``/``aclose()`` release files and
connections.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from typing import Protocol

from driver.journal import Cursor


class Consumer(Protocol):
    name: str
    cursor: Cursor
    sealed: bool  # no more bytes will come: a torn frame at the end is garbage, not a frame still arriving

    @property
    def saved_pos(self) -> int: ...

    @property
    def done_pos(self) -> int: ...

    async def step(self, loop: asyncio.AbstractEventLoop, executor: Executor) -> bool: ...

    def caught_up(self) -> bool: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...

    async def aclose(self) -> None: ...
