"""The metric families the alerts, the dashboard and the monitoring tests use, as Prometheus stores them, in one
place: a rename in driver/metrics.py is a one-line change here (and in the examples that use the name)."""

from __future__ import annotations

import re

# name as stored (counters with their _total) -> what the examples use it for
FAMILIES = {
    "logbridge_lines_received_total": "lines read from dockerd, by stream",
    "logbridge_lines_written_total": "lines in json.log",
    "logbridge_lines_dropped_total": "lines lost, by reason",
    "logbridge_sink_lines_acked_total": "records an output acknowledged",
    "logbridge_sink_lines_dropped_total": "records an output lost, by reason",
    "logbridge_sink_failures_total": "failed deliveries",
    "logbridge_sink_up": "an output's last delivery succeeded",
    "logbridge_sink_lag_seconds": "how long an output has had work waiting",
    "logbridge_backlog_bytes": "journal bytes an output has not written or had acknowledged",
    "logbridge_journal_bytes": "bytes held in a journal",
    "logbridge_journal_max_bytes": "a journal's cap",
    "logbridge_containers_active": "containers with a pipeline",
    "logbridge_uptime_seconds": "seconds since the plugin started",
    "logbridge_process_pss_bytes": "the plugin's memory",
}
BUILTIN = {"up"}  # Prometheus's own series for a scrape target

_NAME = re.compile(r"\b(logbridge_[a-z0-9_]+|up)\b(?!\s*\()")


def names_in(expr: str) -> set[str]:
    """The metric names a PromQL expression refers to (logbridge's, and `up`)."""
    return set(_NAME.findall(expr))
