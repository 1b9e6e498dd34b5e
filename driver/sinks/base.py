"""The contract every journal consumer (json.log writer, forward, Loki, Elasticsearch) follows.

A consumer owns a cursor in its container's journal. The pipeline calls ``pump()`` from a worker thread whenever
the journal grew; ``pump`` does one bounded batch and says whether more work may be waiting. ``saved_pos`` is the
position it has made durable (json.log written, or batch acknowledged): segments before every consumer's saved
position can be deleted. ``flush()`` persists the cursor; ``close()`` releases files and connections.
"""

from __future__ import annotations

from typing import Protocol

from driver.journal import Cursor


class Consumer(Protocol):
    name: str
    cursor: Cursor

    @property
    def saved_pos(self) -> int: ...

    def pump(self) -> bool: ...

    def caught_up(self) -> bool: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...
