"""Decoded journal batches shared between a container's consumers, so a line is decoded once, not per sink.

The first consumer to read a batch at some offset stores what it decoded; a consumer that later reads from the same
offset takes the stored batch whole, which keeps it on the same batch boundaries as the first one, so it keeps
finding them. Only the last few batches are kept: a sink far behind (its aggregator down) decodes for itself.
"""

from __future__ import annotations

from collections import OrderedDict

KEEP = 4  # batches (≤ 1 MiB of journal each)


class DecodedBatches:
    def __init__(self, keep: int = KEEP) -> None:
        self._keep = keep
        self._batches: OrderedDict[int, tuple[int, list[tuple]]] = OrderedDict()

    def get(self, start: int) -> tuple[int, list[tuple]] | None:
        """(bytes used, entries) decoded from ``start``, if a consumer stored them."""
        return self._batches.get(start)

    def put(self, start: int, used: int, entries: list[tuple]) -> None:
        self._batches[start] = (used, entries)
        while len(self._batches) > self._keep:
            self._batches.popitem(last=False)

    def clear(self) -> None:
        self._batches.clear()
