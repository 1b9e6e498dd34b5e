"""`make bench BENCH_SWEEP=1`: the cost curves (issue 13.4), on the real private dockerd of bench/run.py.

Instead of the fixed workloads, every point of two sweeps writes the same bytes (BENCH_SWEEP_MB, 100 MB by default),
so each runs for seconds whatever its line size:

  size        one container, lines of 10 B, 100 B, 1 KB, 16 KB, 40 KB and 200 KB (newline included; dockerd cuts a
              line into 16 KiB entries, so 40 KB is 3 of them and 200 KB 13)
  containers  1, 10 and 100 containers at once, 100-byte lines, the bytes split between them

for each path of BENCH_SWEEP_PATHS (json-file, the floor, Docker's fluentd driver, logbridge local, + forward,
+ Loki, + Elasticsearch), BENCH_SWEEP_RUNS interleaved rounds (2 by default: fewer than the sitting's 7, each cell
says how many). Per point: throughput (MB/s and lines/s until every line was stored and acked), that time, CPU per
million lines and per MB (plugin + dockerd + receiver, and the plugin alone), the plugin's PSS peak.

Then two figures that are not about throughput:

  latency     BENCH_LATENCY_LINES lines (3,000) at about 100 lines/s: p50/p99 from write to stored (json-file,
              logbridge: the json.log line seen by a 1 ms poll) or to acked (logbridge+forward, fluentd: the record
              handed to the receiver, which acks it then). "Write" is the time dockerd stamped on the line when it
              read it from the container, a few microseconds after the write.
  idle        100 containers that write nothing (`sleep`) for BENCH_IDLE_SECONDS (120): plugin and dockerd CPU,
              per hour.

Results: bench/results/sweep.{json,md}; `python -m bench.report` draws the plots and writes bench/results/report.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench import procstat
from bench.run import PARTIAL, PATHS, Bench, Workload, _repeat, env_int, env_list, log

SIZES = [("10 B", 10), ("100 B", 100), ("1 KB", 1000), ("16 KB", 16_384), ("40 KB", 40_000), ("200 KB", 200_000)]
CONTAINERS = [1, 10, 100]
DEFAULT_PATHS = ["json-file", "floor", "fluentd", "logbridge", "logbridge+forward", "logbridge+loki", "logbridge+es"]
LATENCY_PATHS = ["json-file", "logbridge", "logbridge+forward", "fluentd"]
IDLE_PATHS = ["json-file", "logbridge", "logbridge+forward"]
IDLE_CONTAINERS = 100


def wanted_paths() -> list[str]:
    paths = env_list("BENCH_SWEEP_PATHS", DEFAULT_PATHS)
    unknown = [p for p in paths if p not in PATHS]
    if unknown:
        raise SystemExit(f"unknown BENCH_SWEEP_PATHS: {unknown}")
    return ["json-file", *[p for p in paths if p != "json-file"]]


def points() -> list[tuple[str, str, Workload]]:
    """(sweep, x label, workload) for every point, each writing the same bytes."""
    total = env_int("BENCH_SWEEP_MB", 100) * 1_000_000
    out = []
    for label, size in SIZES:
        n = total // size
        out.append(("size", label, Workload(f"size {label}", f"{n:,} lines of {label}", _repeat(size - 1, n), n,
                                            size * n, entries_per_line=max(1, -(-(size - 1) // PARTIAL)))))
    for k in CONTAINERS:
        n = total // 100 // k
        out.append(("containers", str(k), Workload(f"containers {k}", f"{k} containers x {n:,} lines of 100 B",
                                                   _repeat(99, n), n, 100 * n, containers=k)))
    return out


def _figures(rec: dict) -> dict:
    cpu = sum(rec.get(f"{k}_cpu_s") or 0 for k in ("plugin", "dockerd", "receiver"))
    mb = rec["bytes"] / 1e6
    return {"cpu_s": round(cpu, 3), "cpu_per_m": round(cpu / (rec["lines"] / 1e6), 3),
            "cpu_per_mb": round(cpu / mb, 4), "plugin_cpu_per_mb": round(rec["plugin_cpu_s"] / mb, 4)
            if rec.get("plugin_cpu_s") is not None else None}


def run_points(bench: Bench, paths: list[str], runs: int) -> list[dict]:
    records = []
    for sweep, x, wl in points():
        for rnd in range(1, runs + 1):
            for path in paths:
                rec = bench.run(path, wl, rnd)
                rec.update(sweep=sweep, x=x, **_figures(rec))
                records.append(rec)
                log(f"sweep {sweep} {x:>6} r{rnd} {path:18} done {rec['complete_s'] or rec['exit_s']} s  "
                    f"{rec['mb_per_s']} MB/s  {rec['cpu_per_mb']} CPU-s/MB  lost {rec['lost']}")
    return records


# ------------------------------------------------------------------------------------------------- latency
class _LatencyReceiver:
    """driver.receiver's forward server in a thread of this process: the moment each record is handed over (acks
    go right after), against the time in the record (dockerd's stamp)."""

    def __init__(self) -> None:
        from driver.receiver import Receiver, ReceiverConfig

        self.delays_ns: list[int] = []
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._receiver = Receiver(ReceiverConfig(listen="tcp://127.0.0.1:0"),
                                  sink=lambda line: self.delays_ns.append(time.time_ns() - line["time_ns"]))
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self._ready.wait(10)
        self.port = self._receiver.address.port

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._receiver.start())
        self._ready.set()
        self._loop.run_forever()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._receiver.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def _follow_json_log(path: Path, want: int, deadline: float) -> list[int]:
    """Each line's delay from its `time` to when a 1 ms poll first saw it in json.log."""
    from driver.jsonfile import parse_time

    delays, buf, offset = [], b"", 0
    while len(delays) < want and time.monotonic() < deadline:
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                chunk = f.read()
        except FileNotFoundError:
            chunk = b""
        now = time.time_ns()
        if chunk:
            offset += len(chunk)
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                stamp = line.rsplit(b'"time":"', 1)[1].split(b'"', 1)[0]
                delays.append(now - parse_time(stamp))
        time.sleep(0.001)
    return delays


def latency(bench: Bench, paths: list[str]) -> list[dict]:
    n = env_int("BENCH_LATENCY_LINES", 3000)
    wl = Workload("latency", f"{n:,} lines at about 100 lines/s",
                  f"i=0; while [ $i -lt {n} ]; do echo line-$i; usleep 10000; i=$((i+1)); done", n, 0)
    out = []
    for path in paths:
        if path not in PATHS:
            continue
        receiver = _LatencyReceiver() if PATHS[path].forwards else None
        saved = bench.receiver
        if receiver:
            bench.receiver = receiver  # log_args points fluentd-address at it
        try:
            cid = bench.create(path, wl)
            deadline = time.monotonic() + n / 50 + 60
            bench.api("POST", f"/containers/{cid}/start")
            if PATHS[path].forwards:
                while len(receiver.delays_ns) < n and time.monotonic() < deadline:
                    time.sleep(0.05)
                delays = list(receiver.delays_ns)
                what = "acked"
            else:
                delays = _follow_json_log(bench.json_log(path, cid), n, deadline)
                what = "stored"
            bench.cleanup(path, [cid])
        finally:
            bench.receiver = saved
            if receiver:
                receiver.stop()
        ms = sorted(d / 1e6 for d in delays)
        rec = {"path": path, "what": what, "lines": n, "seen": len(ms),
               "p50_ms": round(statistics.median(ms), 2) if ms else None,
               "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 2) if ms else None,
               "max_ms": round(ms[-1], 2) if ms else None}
        out.append(rec)
        log(f"latency {path:18} {what} p50 {rec['p50_ms']} ms  p99 {rec['p99_ms']} ms  ({len(ms)}/{n})")
    return out


# ------------------------------------------------------------------------------------------------- idle
def idle(bench: Bench, paths: list[str]) -> list[dict]:
    seconds = env_int("BENCH_IDLE_SECONDS", 120)
    wl = Workload("idle", f"{IDLE_CONTAINERS} containers writing nothing", "sleep 100000", 0, 0,
                  containers=IDLE_CONTAINERS)
    out = []
    for path in paths:
        if path not in PATHS:
            continue
        with ThreadPoolExecutor(8) as pool:
            cids = list(pool.map(lambda _, p=path: bench.create(p, wl), range(IDLE_CONTAINERS)))
            list(pool.map(lambda c: bench.api("POST", f"/containers/{c}/start"), cids))
        time.sleep(10)  # starting is not idling
        receiver = bench.receiver_of(path)
        cpu0 = bench.cpu(receiver, path)
        time.sleep(seconds)
        cpu1 = bench.cpu(receiver, path)
        pid = bench.plugin_pid(path) if PATHS[path].plugin else None
        pss = procstat.pss_bytes(procstat.tree(pid)) if pid else 0
        bench.cleanup(path, cids)
        per_hour = 3600 / seconds
        rec = {"path": path, "containers": IDLE_CONTAINERS, "seconds": seconds,
               "plugin_cpu_s_per_h": round((cpu1["plugin"] - cpu0["plugin"]) * per_hour, 2) if pid else None,
               "dockerd_cpu_s_per_h": round((cpu1["dockerd"] - cpu0["dockerd"]) * per_hour, 2),
               "pss_mb": round(pss / 1e6, 1) if pid else None}
        out.append(rec)
        log(f"idle {path:18} plugin {rec['plugin_cpu_s_per_h']} CPU-s/h  dockerd {rec['dockerd_cpu_s_per_h']} "
            f"CPU-s/h  PSS {rec['pss_mb']} MB")
    return out


# ------------------------------------------------------------------------------------------------- results
def summarise(records: list[dict]) -> dict:
    """{sweep: {x: {path: {figure: {median, min, max, n}}}}}."""
    keys = ["complete_s", "exit_s", "mb_per_s", "lines_per_s", "cpu_per_m", "cpu_per_mb", "plugin_cpu_per_m",
            "plugin_cpu_per_mb", "dockerd_cpu_per_m", "receiver_cpu_per_m", "pss_peak_mb", "lost"]
    out: dict = {}
    for r in records:
        out.setdefault(r["sweep"], {}).setdefault(r["x"], {}).setdefault(r["path"], []).append(r)
    for sweep in out.values():
        for by_path in sweep.values():
            for path, recs in by_path.items():
                s = {}
                for k in keys:
                    vals = [r[k] for r in recs if r.get(k) is not None]
                    if vals:
                        s[k] = {"median": round(statistics.median(vals), 4), "min": min(vals), "max": max(vals),
                                "n": len(vals)}
                # a path that stores nothing (floor) is done at exit: its throughput over the exit time
                if "mb_per_s" not in s and recs[0].get("exit_s"):
                    vals = [r["bytes"] / 1e6 / r["exit_s"] for r in recs if r.get("exit_s")]
                    s["mb_per_s"] = {"median": round(statistics.median(vals), 2), "min": round(min(vals), 2),
                                     "max": round(max(vals), 2), "n": len(vals)}
                by_path[path] = s
    return out


def _cell(s: dict | None, fmt: str = "{:.2f}") -> str:
    if not s:
        return "–"
    if s["n"] == 1 or s["min"] == s["max"]:
        return fmt.format(s["median"])
    return f"{fmt.format(s['median'])} ({fmt.format(s['min'])}–{fmt.format(s['max'])})"


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"# logbridge cost curves (`make bench BENCH_SWEEP=1`) — {result['started']}", "",
             f"Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['mem_gb']} GB, kernel {m['kernel']}; dockerd "
             f"{result['dockerd_version']}; logbridge {result['git']}. Every point writes {result['sweep_mb']} MB; "
             f"{result['runs']} interleaved rounds per point (cells: median (min–max) of {result['runs']}). "
             "done s: until every line was stored (json.log) and acked (receiver), exit for `floor`; CPU: plugin + "
             "dockerd + receiver, utime+stime. Receivers: bench.receiver (forward, acks; fluentd's too), "
             "bench.loki_receiver, bench.elasticsearch, as in the sitting.", ""]
    titles = {"size": "Line size (one container)", "containers": "Container count (100-byte lines)"}
    for sweep, by_x in result["summary"].items():
        lines += [f"## {titles.get(sweep, sweep)}", "",
                  "| point | path | done s | MB/s | lines/s | CPU-s/M lines | CPU-s/MB | plugin CPU-s/MB | "
                  "PSS peak MB | lost |", "|" + "---|" * 10]
        for x, by_path in by_x.items():
            for path, s in by_path.items():
                lines.append("| " + " | ".join([
                    x, path, _cell(s.get("complete_s") or s.get("exit_s")), _cell(s.get("mb_per_s"), "{:.1f}"),
                    _cell(s.get("lines_per_s"), "{:,.0f}"), _cell(s.get("cpu_per_m")),
                    _cell(s.get("cpu_per_mb"), "{:.4f}"), _cell(s.get("plugin_cpu_per_mb"), "{:.4f}"),
                    _cell(s.get("pss_peak_mb"), "{:.1f}"), _cell(s.get("lost"), "{:.0f}")]) + " |")
        lines.append("")
    if result.get("latency"):
        lines += ["## Latency at about 100 lines/s", "",
                  "From dockerd's stamp on the line to json.log holding it (stored) or the receiver taking it "
                  "(acked).", "", "| path | to | p50 ms | p99 ms | max ms | lines seen |", "|---|---|---|---|---|---|"]
        for r in result["latency"]:
            lines.append(f"| {r['path']} | {r['what']} | {r['p50_ms']} | {r['p99_ms']} | {r['max_ms']} | "
                         f"{r['seen']:,}/{r['lines']:,} |")
        lines.append("")
    if result.get("idle"):
        lines += [f"## Idle cost: {IDLE_CONTAINERS} containers writing nothing", "",
                  "| path | plugin CPU-s per hour | dockerd CPU-s per hour | plugin PSS MB | measured over s |",
                  "|---|---|---|---|---|"]
        for r in result["idle"]:
            lines.append(f"| {r['path']} | {r['plugin_cpu_s_per_h'] if r['plugin_cpu_s_per_h'] is not None else '–'}"
                         f" | {r['dockerd_cpu_s_per_h']} | {r['pss_mb'] if r['pss_mb'] is not None else '–'} | "
                         f"{r['seconds']} |")
        lines.append("")
    return "\n".join(lines)


def run_sweep(bench: Bench, result: dict, out: Path) -> int:
    paths = wanted_paths()
    runs = env_int("BENCH_SWEEP_RUNS", 2)
    result.update(runs=runs, sweep_mb=env_int("BENCH_SWEEP_MB", 100), sweep_paths=paths)
    records = run_points(bench, paths, runs) if os.environ.get("BENCH_SWEEP_POINTS", "1") == "1" else []
    result["latency"] = latency(bench, [p for p in LATENCY_PATHS if p in paths])
    result["idle"] = idle(bench, [p for p in IDLE_PATHS if p in paths])
    result["summary"] = summarise(records)
    result["records"] = records
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    md = markdown(result)
    out.with_suffix(".md").write_text(md)
    print(md)
    log(f"wrote {out}.json and {out}.md")
    return 0
