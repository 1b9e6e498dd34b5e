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

from driver.frames import HEADER, MAX_FRAME, FrameDecoder
from driver.journal import Cursor, Journal


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


def read_frames(journal: Journal, decoder: FrameDecoder, start: int, limit: int, sealed: bool,
                offsets: list[int] | None = None) -> tuple[list[tuple], int] | None:
    """Entries of the whole frames in ``limit`` journal bytes from ``start``, and the bytes they used (garbage
    included); None when the journal holds nothing there. ``sealed``: no more bytes will come. ``offsets``: a list
    that gets the journal offset of each entry's frame (only the forward sink's record ids need them).

    A frame longer than the read is read whole, four times more at a time up to MAX_FRAME: dockerd's frames stay under
    17 KiB, but a torn header can claim up to MAX_FRAME, and the lines after it must not wait for the container to stop.
    """
    while True:
        data = journal.read(start, limit)
        if not data:
            return None
        entries, used = decoder.decode(data, final=sealed and start + len(data) >= journal.end, offsets=offsets)
        if used or len(data) < limit or limit >= HEADER + MAX_FRAME:
            if offsets:
                offsets[:] = [start + at for at in offsets]
            return entries, used
        limit = min(4 * limit, HEADER + MAX_FRAME)
