"""Decoded journal batches handed from the json.log writer to a container's sink, so a line is decoded once.

The json.log writer stores each batch it decoded; the sink, reading from the same offset, takes the batch whole
(and out of the store), which keeps it on the same batch boundaries, so it keeps finding them. Only the last
batches are kept: a sink far behind (its aggregator down) decodes for itself, and memory stays bounded.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

KEEP = 2  # batches (each ≤ the consumers' batch size of journal bytes)


class DecodedBatches:
    def __init__(self, wanted: Callable[[int], bool], keep: int = KEEP) -> None:
        self._wanted = wanted  # whether the sink will read from this offset next (a stuck sink will not)
        self._keep = keep
        self._batches: OrderedDict[int, tuple[int, list[tuple]]] = OrderedDict()

    def take(self, start: int) -> tuple[int, list[tuple]] | None:
        """(bytes used, entries) decoded from ``start``, if the writer stored them; they leave the store."""
        return self._batches.pop(start, None)

    def put(self, start: int, used: int, entries: list[tuple]) -> None:
        if not self._wanted(start):
            return
        self._batches[start] = (used, entries)
        while len(self._batches) > self._keep:
            self._batches.popitem(last=False)

    def clear(self) -> None:
        self._batches.clear()
