"""Per-container accounting of every line: received, written, dropped by reason.

Counters live in memory and are updated from worker threads (plain int adds under the GIL, no lock needed for
monotonic counters read by a scraper). Issue 6 builds the Prometheus view on top of these.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

DROP_REASONS = ("garbled_frame", "journal_cap", "disk_full")


@dataclass
class ContainerStats:
    container_id: str
    lines_written: int = 0
    garbled_frames: int = 0
    dropped_lines: Counter = field(default_factory=Counter)
    dropped_bytes: Counter = field(default_factory=Counter)

    def written(self, n: int) -> None:
        self.lines_written += n

    def garbled(self, n: int) -> None:
        self.garbled_frames += n

    def dropped(self, reason: str, lines: int, nbytes: int) -> None:
        self.dropped_lines[reason] += lines
        self.dropped_bytes[reason] += nbytes
