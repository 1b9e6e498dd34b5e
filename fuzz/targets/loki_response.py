"""Loki response handling: driver/outputs/loki/client.answer, what an HTTP answer (status, body, Retry-After)
means to the batcher. Properties: it never raises; the outcome follows the status rules (2xx stored; 429, 5xx
retry; 401, 403, 404 down; 413 split; any other status final); the message is the body's first non-blank line; a
Retry-After is None or a finite number of seconds in [0, MAX_RETRY_AFTER]."""

from __future__ import annotations

import math

import atheris

from driver.outputs.loki.client import MAX_RETRY_AFTER, Outcome, answer

from .common import Finding

MAX_LEN = 1 << 12
# Spellings float() takes that are not a plain number of seconds, and an HTTP date (RFC 9110 allows it).
RETRY_AFTER = ["120", " 1.5 ", "0", "-3", "1e400", "-1e400", "inf", "nan", "NaN", "-nan", "Infinity", "1_0", "١٢",
               "Wed, 21 Oct 2026 07:28:00 GMT", ""]
STATUSES = [200, 204, 299, 300, 400, 401, 403, 404, 413, 429, 500, 502, 503, 599, 0, 100, 600, 999]


def expected(status: int) -> Outcome:
    if 200 <= status < 300:
        return Outcome.STORED
    if status in (0, 429) or status >= 500:
        return Outcome.RETRY
    return {401: Outcome.DOWN, 403: Outcome.DOWN, 404: Outcome.DOWN, 413: Outcome.SPLIT}.get(status,
                                                                                             Outcome.REJECTED)


def fuzz_one(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    status = fdp.PickValueInList(STATUSES) if fdp.ConsumeBool() else fdp.ConsumeIntInRange(0, 999)
    pick = fdp.ConsumeIntInRange(0, 3)
    header = (None if pick == 0 else fdp.PickValueInList(RETRY_AFTER) if pick == 1
              else fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 24)))
    text = fdp.ConsumeBytes(fdp.remaining_bytes()).decode("utf-8", "replace")  # as aiohttp's text(errors=...)
    result = answer(status, text, header)
    if result.outcome is not expected(status) or result.status != status:
        raise Finding(f"status {status} -> {result!r}")
    if len(result.message.splitlines()) > 1 or (text.strip() and not result.message.strip()):
        raise Finding(f"message is not the body's first line: {result.message!r}")
    if result.message and result.message not in text:
        raise Finding(f"message is not from the body: {result.message!r}")
    wait = result.retry_after
    if wait is not None and not (math.isfinite(wait) and 0.0 <= wait <= MAX_RETRY_AFTER):
        raise Finding(f"Retry-After {header!r} -> {wait!r}")


def seeds() -> dict[str, bytes]:
    return {}
