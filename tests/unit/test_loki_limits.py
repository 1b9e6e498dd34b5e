"""The pre-check of each entry against Loki's limits: the reason an entry would be refused."""

from __future__ import annotations

from driver.outputs.loki.limits import LINE_TOO_LONG, NS, TOO_NEW, TOO_OLD, Limits, entry_reason, split_entries

NOW = 1_800_000_000 * NS
DAY = 24 * 3600 * NS


def e(ts, size=10):
    return ("stdout", ts, b"x" * size, False, False, "", 0)


def test_loki_defaults():
    lim = Limits()
    assert entry_reason(lim, NOW, NOW - 7 * DAY, 10) is None
    assert entry_reason(lim, NOW, NOW - 7 * DAY - 1, 10) == TOO_OLD
    assert entry_reason(lim, NOW, NOW + 600 * NS, 10) is None
    assert entry_reason(lim, NOW, NOW + 600 * NS + 1, 10) == TOO_NEW
    assert entry_reason(lim, NOW, NOW, 256_000) is None
    assert entry_reason(lim, NOW, NOW, 256_001) == LINE_TOO_LONG


def test_settable_and_off():
    assert entry_reason(Limits(max_line_size=0, max_age_ns=0), NOW, 0, 10**7) is None
    assert entry_reason(Limits(max_line_size=5), NOW, NOW, 6) == LINE_TOO_LONG


def test_split_counts_each_reason_and_keeps_order():
    entries = [e(NOW), e(NOW - 8 * DAY), e(NOW + 1), e(NOW + DAY), e(NOW, 300_000), e(NOW - 9 * DAY)]
    kept, dropped = split_entries(Limits(), NOW, entries)
    assert kept == [entries[0], entries[2]]
    assert dropped == {TOO_OLD: 2, TOO_NEW: 1, LINE_TOO_LONG: 1}


def test_split_passes_a_clean_batch_as_is():
    entries = [e(NOW - i) for i in range(100)]
    kept, dropped = split_entries(Limits(), NOW, entries)
    assert kept is entries and dropped == {}
