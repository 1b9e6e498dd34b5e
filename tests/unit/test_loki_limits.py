"""The pre-check of each entry against Loki's limits: the reason an entry would be refused."""

from __future__ import annotations

from driver.outputs.loki.limits import LINE_TOO_LONG, NS, TOO_NEW, TOO_OLD, Limits, bounds, entry_reason

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


def test_bounds_make_the_encoder_drop_what_entry_reason_names():
    from driver.outputs.loki import codec

    entries = [e(NOW), e(NOW - 8 * DAY), e(NOW + 1), e(NOW + DAY), e(NOW, 300_000), e(NOW - 9 * DAY)]
    encoded, sent, size, too_old, too_new, too_long, in_order = codec.encode_stream(
        entries, "stdout", b"", *bounds(Limits(), NOW))
    assert (sent, too_old, too_new, too_long) == (2, 2, 1, 1)
    reasons = [entry_reason(Limits(), NOW, x[1], len(x[2])) for x in entries]
    assert reasons == [None, TOO_OLD, None, TOO_NEW, LINE_TOO_LONG, TOO_OLD]
    assert bounds(Limits(max_line_size=0, max_age_ns=0), NOW)[0::2] == (-1, (1 << 63) - 1)
