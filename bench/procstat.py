"""What a process tree costs, read from /proc: CPU seconds (utime+stime) and memory as PSS.

PSS (proportional set size, /proc/PID/smaps_rollup) counts shared pages once across the tree and leaves out
the page cache that json.log writes fill, which inflates cgroup and RSS figures.
"""

from __future__ import annotations

import os

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    # comm may hold spaces and parentheses: the fields after the last ")" start with state (field 3)
    return data.rsplit(")", 1)[1].split()


def ppid_map() -> dict[int, int]:
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _stat_fields(int(name))
            if fields:
                out[int(name)] = int(fields[1])
    return out


def tree(pid: int) -> list[int]:
    """`pid` and all its live descendants."""
    parents = ppid_map()
    kids: dict[int, list[int]] = {}
    for p, pp in parents.items():
        kids.setdefault(pp, []).append(p)
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        if p in parents or p == pid:
            out.append(p)
        todo.extend(kids.get(p, ()))
    return out


def cpu_seconds(pid: int, reaped_children: bool = False) -> float:
    """utime+stime of one process (all its threads); with `reaped_children` also what its waited-for
    children used (cutime+cstime)."""
    fields = _stat_fields(pid)
    if not fields:
        return 0.0
    # fields[0] is field 3 (state): utime=14, stime=15, cutime=16, cstime=17 -> indexes 11..14
    ticks = int(fields[11]) + int(fields[12])
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process tree: the root with its reaped children plus every live descendant."""
    pids = tree(pid)
    return sum(cpu_seconds(p, reaped_children=(p == pid)) for p in pids)


def pss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            continue
    return total


def machine() -> dict:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    u = os.uname()
    try:
        with open("/proc/meminfo") as f:
            mem_kb = int(f.readline().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kb = 0
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": u.release,
        "machine": u.machine,
        "mem_gb": round(mem_kb / 1024 / 1024, 1),
    }


def loadavg() -> list[float]:
    try:
        with open("/proc/loadavg") as f:
            return [float(x) for x in f.read().split()[:3]]
    except OSError:
        return []
