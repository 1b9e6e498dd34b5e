"""The json.log writer's decoded batches, handed to the forward sink: bounded per container and in total."""

from __future__ import annotations

import pytest

from driver import decoded
from driver.decoded import DecodedBatches


@pytest.fixture
def budget(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(decoded, "MAX_HELD_ENTRIES", 10)
    assert decoded.held_entries() == 0
    return 10


def batch(n: int) -> list[tuple]:
    return [("stdout", i, b"x", False, False, "", 0) for i in range(n)]


def test_a_batch_is_taken_once_from_where_the_sink_reads(budget: int):
    store = DecodedBatches(lambda start: start == 0)
    store.put(0, 100, batch(3))
    store.put(100, 100, batch(3))  # not where the sink reads next: not kept
    assert store.take(100) is None
    assert store.take(0) == (100, batch(3))
    assert store.take(0) is None
    assert decoded.held_entries() == 0


def test_all_containers_together_hold_at_most_the_budget(budget: int):
    a, b = DecodedBatches(lambda start: True), DecodedBatches(lambda start: True)
    a.put(0, 10, batch(6))
    b.put(0, 10, batch(6))  # over the budget: b's sink decodes for itself
    assert b.take(0) is None
    assert decoded.held_entries() == 6
    a.take(0)
    b.put(0, 10, batch(6))
    assert b.take(0) == (10, batch(6))
    a.put(0, 10, batch(4))
    a.put(10, 10, batch(4))
    a.put(20, 10, batch(4))  # over the budget while the first two are held
    assert decoded.held_entries() == 8
    a.clear()
    assert decoded.held_entries() == 0


def test_only_the_last_batches_are_kept(budget: int):
    store = DecodedBatches(lambda start: True, keep=2)
    for start in range(3):
        store.put(start, 1, batch(2))
    assert store.take(0) is None and store.take(1) is not None and store.take(2) is not None
    assert decoded.held_entries() == 0
