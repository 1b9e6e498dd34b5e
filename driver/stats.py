"""Per-container accounting of every line: received, written, forwarded, dropped by reason.

Counters are plain ints bumped once per batch by the thread that owns the batch (no lock: each field has one
writer); the metrics endpoint reads them at scrape time. They are saved with the json.log cursor, so a
restarted plugin continues its counts from the position it replays from.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

DROP_REASONS = ("garbled_frame", "journal_cap", "disk_full")
STREAMS = ("stdout", "stderr")


@dataclass
class ContainerStats:
    container_id: str
    received_lines: Counter = field(default_factory=Counter)  # by stream, entries decoded from the journal
    received_bytes: Counter = field(default_factory=Counter)
    lines_written: int = 0
    rotations: int = 0
    write_errors: int = 0  # json.log writes that failed other than by a full disk (EIO, EROFS); retried
    dropped_lines: Counter = field(default_factory=Counter)  # by reason
    dropped_bytes: Counter = field(default_factory=Counter)
    # Written by the FIFO reader on the event loop only (the fields above belong to the json.log writer's thread):
    # lines read from the FIFO that the journal's full disk had no room for, by stream. They are received lines
    # (received = written + dropped) and disk_full drops.
    unjournaled_lines: Counter = field(default_factory=Counter)
    unjournaled_bytes: Counter = field(default_factory=Counter)
    unjournaled_garbled: int = 0  # garbage the FIFO reader stepped over while dropping

    def received(self, out_lines: int, out_bytes: int, err_lines: int, err_bytes: int) -> None:
        """A decoded batch's counts (FrameDecoder.counts)."""
        self.received_lines["stdout"] += out_lines
        self.received_bytes["stdout"] += out_bytes
        self.received_lines["stderr"] += err_lines
        self.received_bytes["stderr"] += err_bytes

    def unjournaled(self, out_lines: int, out_bytes: int, err_lines: int, err_bytes: int, garbled: int) -> None:
        """Lines the FIFO reader dropped because the journal's disk was full (FrameDecoder.counts + garbled)."""
        self.unjournaled_lines["stdout"] += out_lines
        self.unjournaled_bytes["stdout"] += out_bytes
        self.unjournaled_lines["stderr"] += err_lines
        self.unjournaled_bytes["stderr"] += err_bytes
        self.unjournaled_garbled += garbled

    def lines_received(self, stream: str) -> int:
        return self.received_lines[stream] + self.unjournaled_lines[stream]

    def bytes_received(self, stream: str) -> int:
        return self.received_bytes[stream] + self.unjournaled_bytes[stream]

    def lines_dropped(self, reason: str) -> int:
        if reason == "disk_full":
            return self.dropped_lines[reason] + sum(self.unjournaled_lines.values())
        if reason == "garbled_frame":
            return self.dropped_lines[reason] + self.unjournaled_garbled
        return self.dropped_lines[reason]

    def written(self, n: int) -> None:
        self.lines_written += n

    def garbled(self, incidents: int, nbytes: int = 0) -> None:
        self.dropped("garbled_frame", incidents, nbytes)

    def dropped(self, reason: str, lines: int, nbytes: int) -> None:
        self.dropped_lines[reason] += lines
        self.dropped_bytes[reason] += nbytes

    # ---- persistence ------------------------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {
            "received_lines": dict(self.received_lines),
            "received_bytes": dict(self.received_bytes),
            "lines_written": self.lines_written,
            "rotations": self.rotations,
            "write_errors": self.write_errors,
            "dropped_lines": dict(self.dropped_lines),
            "dropped_bytes": dict(self.dropped_bytes),
            "unjournaled_lines": dict(self.unjournaled_lines),
            "unjournaled_bytes": dict(self.unjournaled_bytes),
            "unjournaled_garbled": self.unjournaled_garbled,
        }

    def restore(self, data: dict) -> None:
        """Continue from counts saved with a cursor (they match the position the replay starts from)."""
        self.received_lines = Counter(data.get("received_lines", {}))
        self.received_bytes = Counter(data.get("received_bytes", {}))
        self.lines_written = int(data.get("lines_written", 0))
        self.rotations = int(data.get("rotations", 0))
        self.write_errors = int(data.get("write_errors", 0))
        self.dropped_lines = Counter(data.get("dropped_lines", {}))
        self.dropped_bytes = Counter(data.get("dropped_bytes", {}))
        self.unjournaled_lines = Counter(data.get("unjournaled_lines", {}))
        self.unjournaled_bytes = Counter(data.get("unjournaled_bytes", {}))
        self.unjournaled_garbled = int(data.get("unjournaled_garbled", 0))

    def add(self, other: ContainerStats, sign: int = 1) -> None:
        """Fold counts into a running total (``sign=-1`` takes them out again)."""
        for mine, theirs in ((self.received_lines, other.received_lines), (self.received_bytes, other.received_bytes),
                             (self.dropped_lines, other.dropped_lines), (self.dropped_bytes, other.dropped_bytes),
                             (self.unjournaled_lines, other.unjournaled_lines),
                             (self.unjournaled_bytes, other.unjournaled_bytes)):
            for key, value in theirs.items():
                mine[key] += sign * value
        self.lines_written += sign * other.lines_written
        self.rotations += sign * other.rotations
        self.unjournaled_garbled += sign * other.unjournaled_garbled
        self.write_errors += sign * other.write_errors
