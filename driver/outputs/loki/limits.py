"""Loki's validation limits, checked before sending so that a 400 (which Loki answers after storing the valid
part of a push) stays rare, and each entry Loki would refuse is counted under its own reason. Pure.

The rules and default values are the distributor's (grafana/loki ``pkg/distributor/validator.go``
``ValidateEntry`` and ``ValidateLabels``; defaults from ``pkg/validation/limits.go``): an entry older than
``reject_old_samples_max_age`` (7 days), more than ``creation_grace_period`` (10 minutes) ahead, or with a line
longer than ``max_line_size`` ("256KB", which dskit's flagext.ByteSize reads with go-humanize as 256,000
bytes); a stream with more
than 15 label names (an existing ``service_name`` not counted), a name over 1024 bytes or a value over 2048.
A Loki configured otherwise is matched by the loki-max-* options.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

NS = 1_000_000_000

# Reasons, as Loki's discarded_samples_total names them.
TOO_OLD = "greater_than_max_sample_age"
TOO_NEW = "too_far_in_future"
LINE_TOO_LONG = "line_too_long"
REASONS = (TOO_OLD, TOO_NEW, LINE_TOO_LONG)


@dataclass(frozen=True)
class Limits:
    max_line_size: int = 256_000  # 0: no limit
    max_age_ns: int = 7 * 24 * 3600 * NS  # 0: old entries are not rejected (reject_old_samples: false)
    creation_grace_ns: int = 10 * 60 * NS
    max_label_names: int = 15
    max_label_name_length: int = 1024
    max_label_value_length: int = 2048


def entry_reason(limits: Limits, now_ns: int, time_nano: int, line_len: int) -> str | None:
    """Why Loki would refuse this entry, in the distributor's order, or None."""
    if limits.max_age_ns and time_nano < now_ns - limits.max_age_ns:
        return TOO_OLD
    if time_nano > now_ns + limits.creation_grace_ns:
        return TOO_NEW
    if limits.max_line_size and line_len > limits.max_line_size:
        return LINE_TOO_LONG
    return None


def bounds(limits: Limits, now_ns: int) -> tuple[int, int, int]:
    """``(oldest, newest, longest)`` for codec.encode_stream: the same rules as entry_reason, as three numbers."""
    oldest = now_ns - limits.max_age_ns if limits.max_age_ns else -1
    return oldest, now_ns + limits.creation_grace_ns, limits.max_line_size or (1 << 63) - 1


def labels_problem(limits: Limits, labels: Mapping[str, str]) -> str | None:
    """What Loki's ValidateLabels would refuse in this label set (the message for the user), or None."""
    if not labels:
        return "a stream needs at least one label"
    count = len(labels) - (1 if "service_name" in labels else 0)
    if count > limits.max_label_names:
        return (f"{count} label names, Loki accepts at most {limits.max_label_names} "
                "(drop some with loki-relabel-config)")
    for name, value in labels.items():
        if len(name.encode()) > limits.max_label_name_length:
            return f"label name {name[:40]!r}... is longer than {limits.max_label_name_length} bytes"
        if len(value.encode()) > limits.max_label_value_length:
            return f"label {name} has a value longer than {limits.max_label_value_length} bytes"
    return None
