"""What `make fuzz` found (fuzz/README.md, "Findings"), one test each, fast and deterministic: the input that broke
a property, replayed on the code that now keeps it."""

from __future__ import annotations

import math
import random

from driver.outputs.loki.client import Backoff, answer, parse_retry_after


def test_a_nan_retry_after_is_no_retry_after():
    # fuzz target loki_response: float() takes "nan", and min/max keep a NaN, so a server's `Retry-After: nan`
    # became a NaN wait in the PushResult the batcher sleeps on.
    for spelling in ("nan", "NaN", "-nan", " nan "):
        assert parse_retry_after(spelling) is None, spelling
        result = answer(429, "slow down", spelling)
        assert result.retry_after is None
        wait = Backoff(0.5, 30.0, random.Random(1)).next(result.retry_after)
        assert math.isfinite(wait) and 0.5 <= wait <= 1.0
    assert parse_retry_after("inf") == parse_retry_after("1e400") == 3600.0 and parse_retry_after("-inf") == 0.0
