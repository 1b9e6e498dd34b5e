"""The plugin process's own memory as PSS (proportional set size), for the metrics.

PSS from /proc/self/smaps_rollup counts shared pages once and leaves out the page cache that json.log writes fill,
which inflates RSS and cgroup figures: it is what the benchmarks report as the plugin's memory.
"""

from __future__ import annotations


def pss_bytes(path: str = "/proc/self/smaps_rollup") -> int | None:
    """The process's PSS in bytes; None where the kernel has no smaps_rollup (before 4.14, not Linux)."""
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024  # the kernel reports kB
    except OSError:
        return None
    return None
