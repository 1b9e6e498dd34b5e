"""Decoded journal batches handed from the json.log writer to a container's sink, so a line is decoded once.

The json.log writer stores each batch it decoded; the sink, reading from the same offset, takes the batch whole
(and out of the store), which keeps it on the same batch boundaries, so it keeps finding them. Only the last
batches are kept: a sink far behind (its aggregator down) decodes for itself, and memory stays bounded.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

KEEP = 2  # batches (each ≤ the consumers' batch size of journal bytes)
# Entries held by all containers' stores together (~200 bytes each as tuples). With 100 containers whose sinks lag
# behind their json.log writers, two full batches each held ~280 MB (make bench, concurrent run); past this budget
# a sink decodes for itself, which the C decoder makes cheap.
MAX_HELD_ENTRIES = 100_000
_held = 0
_held_lock = threading.Lock()


def _account(delta: int) -> bool:
    """Add `delta` held entries if the budget allows (always for a release). Returns whether it was added."""
    global _held
    with _held_lock:
        if delta > 0 and _held + delta > MAX_HELD_ENTRIES:
            return False
        _held += delta
        return True


def held_entries() -> int:
    return _held


class DecodedBatches:
    def __init__(self, wanted: Callable[[int], bool], keep: int = KEEP) -> None:
        self._wanted = wanted  # whether the sink will read from this offset next (a stuck sink will not)
        self._keep = keep
        self._batches: OrderedDict[int, tuple[int, list[tuple]]] = OrderedDict()

    def take(self, start: int) -> tuple[int, list[tuple]] | None:
        """(bytes used, entries) decoded from ``start``, if the writer stored them; they leave the store."""
        batch = self._batches.pop(start, None)
        if batch is not None:
            _account(-len(batch[1]))
        return batch

    def put(self, start: int, used: int, entries: list[tuple]) -> None:
        if not self._wanted(start) or not _account(len(entries)):
            return
        old = self._batches.pop(start, None)
        if old is not None:
            _account(-len(old[1]))
        self._batches[start] = (used, entries)
        while len(self._batches) > self._keep:
            _account(-len(self._batches.popitem(last=False)[1][1]))

    def clear(self) -> None:
        _account(-sum(len(entries) for _, entries in self._batches.values()))
        self._batches.clear()
