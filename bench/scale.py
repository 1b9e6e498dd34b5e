"""`make bench BENCH_SCALE=10,100,1000`: N containers logging at once on the real private dockerd (issue 11.6).

Per N and path (json-file, then logbridge+forward to bench.receiver): N busybox containers are created and started
in parallel batches; each blocks on a shared FIFO (bind-mounted) until every one of them runs, so creating and
starting them is not in the figures. Then the FIFO is opened and closed: all N wake at once and each writes
BENCH_SCALE_RATE lines a second for BENCH_SCALE_SECONDS (one printf burst, then `sleep 1`).

Figures per run:
  start p50/p99    seconds of `POST /containers/{id}/start` (dockerd calls StartLogging inside it and waits for
                   the answer: the difference to json-file's start is what logbridge's StartLogging adds)
  PSS idle/peak    the plugin's summed PSS with N containers attached and waiting, and at its peak while writing
  fds              the plugin's open fds with N containers attached; its RLIMIT_NOFILE (/proc/PID/limits)
  connections      established TCP connections to the receiver's port with N containers attached
  stored/acked s   from the release until json.log (all N files) / the receiver held every entry
  CPU-s            the plugin's process tree, dockerd alone, over the writing phase
The per-container slope is the least-squares fit of PSS against N over the Ns run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

from bench import procstat
from bench.run import API, Bench, LineCounter, PssSampler, env_int, env_list, log
from tests.support.procs import UnixHTTPConnection

LABEL = "lbscale"
PATHS = ("json-file", "logbridge+forward")
STARTS_AT_ONCE = 8  # parallel `docker start`s: dockerd and runc on 2 CPUs gain nothing from more


def api_json(sock: str, method: str, url: str, body: dict | None = None, timeout: float = 120) -> tuple[int, bytes]:
    """One Docker API request with a JSON body (dockerd wants the Content-Type on create)."""
    conn = UnixHTTPConnection(sock, timeout)
    try:
        data = json.dumps(body).encode() if body is not None else b""
        conn.request(method, API + url, body=data, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def writer_cmd(rate: int, seconds: int) -> str:
    """busybox sh: wait at the barrier FIFO, then `rate` lines a second for `seconds` (printf is a builtin)."""
    nums = " ".join(str(i) for i in range(1, rate + 1))
    return (f"read x < /barrier/go; i=0; while [ $i -lt {seconds} ]; do printf \"$i-%s\\n\" {nums}; sleep 1; "
            f"i=$((i+1)); done")


def least_squares(xs: list[float], ys: list[float]) -> tuple[float, float] | None:
    """(slope, intercept) of the line through (xs, ys) with the least squared error."""
    if len(xs) < 2:
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return slope, my - slope * mx


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))]


def open_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def nofile_limit(pid: int) -> str | None:
    """The soft and hard RLIMIT_NOFILE of a process, as /proc/PID/limits shows them."""
    try:
        with open(f"/proc/{pid}/limits") as f:
            for line in f:
                if line.startswith("Max open files"):
                    soft, hard = line.split()[3:5]
                    return f"{soft}/{hard}"
    except OSError:
        pass
    return None


def connections_to(port: int) -> int:
    """Established TCP connections whose local port is `port` (the receiver's side of each one)."""
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for row in f:
                    fields = row.split()
                    if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        n += 1
        except OSError:
            continue
    return n


class ScaleRun:
    def __init__(self, bench: Bench, state: Path, rate: int, seconds: int) -> None:
        self.bench = bench
        self.sock = str(bench.dockerd.socket)
        self.rate, self.seconds = rate, seconds
        self.barrier_dir = state / "barrier"
        self.barrier_dir.mkdir(exist_ok=True)
        self.barrier = self.barrier_dir / "go"

    def create(self, path: str, run_label: str) -> str:
        args = self.bench.log_args(path)
        log_config = {"Type": args[1], "Config": dict(o.split("=", 1) for o in args[3::2])}
        body = {"Image": self.bench.image, "Cmd": ["sh", "-c", writer_cmd(self.rate, self.seconds)],
                "Labels": {LABEL: run_label},
                "HostConfig": {"NetworkMode": "none", "LogConfig": log_config,
                               "Binds": [f"{self.barrier_dir}:/barrier:ro"]}}
        status, out = api_json(self.sock, "POST", "/containers/create", body)
        if status != 201:
            raise RuntimeError(f"create failed: {status} {out[:300]!r}")
        return json.loads(out)["Id"]

    def start(self, cid: str) -> float:
        t = time.monotonic()
        status, out = api_json(self.sock, "POST", f"/containers/{cid}/start")
        if status >= 300:
            raise RuntimeError(f"start failed: {status} {out[:300]!r}")
        return time.monotonic() - t

    def running(self, run_label: str) -> int:
        filters = quote(json.dumps({"label": [f"{LABEL}={run_label}"], "status": ["running"]}))
        status, out = api_json(self.sock, "GET", f"/containers/json?filters={filters}")
        return len(json.loads(out)) if status == 200 else -1

    def release(self) -> None:
        """Open and close the barrier FIFO: every container blocked opening it reads EOF and starts writing."""
        fd = os.open(self.barrier, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)

    def _dockerd_log_size(self) -> int:
        try:
            return self.bench.dockerd.log_path.stat().st_size
        except OSError:
            return 0

    def _start_logging_seconds(self, offset: int) -> list[float]:
        """The plugin's own StartLogging times since `offset` of dockerd's log (its debug line, on stdout)."""
        out = []
        try:
            with open(self.bench.dockerd.log_path, "rb") as f:
                f.seek(offset)
                for raw in f:
                    if b"StartLogging served" in raw:
                        m = re.search(rb'\\"seconds\\": ?([0-9.e-]+)', raw)
                        if m:
                            out.append(float(m[1]))
        except OSError:
            pass
        return out

    def _plugin_log_counts(self, offset: int) -> dict[str, int]:
        """The plugin's warnings and errors since `offset` of dockerd's log (its stderr is logged at error level),
        counted by message."""
        counts: dict[str, int] = {}
        plugin_id = getattr(self.bench.plugin, "id", None)  # a legacy plugin's output is not in dockerd's log
        if plugin_id is None:
            return counts
        try:
            with open(self.bench.dockerd.log_path, "rb") as f:
                f.seek(offset)
                for raw in f:
                    line = raw.decode(errors="replace")
                    if f"plugin={plugin_id}" not in line or "level=error" not in line:
                        continue
                    m = re.search(r'\\"msg\\": ?\\"([^\\]+)', line)
                    key = m[1] if m else line[:120]
                    counts[key] = counts.get(key, 0) + 1
        except OSError:
            pass
        return counts

    def run(self, path: str, n: int, timeout: float) -> dict:
        bench = self.bench
        plugin = path != "json-file"
        receiver = bench.receiver_of(path)
        if self.barrier.exists():
            self.barrier.unlink()
        os.mkfifo(self.barrier)
        run_label = f"{path}-{n}-{time.monotonic_ns()}"
        pid = bench.plugin_pid() if plugin else None
        log_offset = self._dockerd_log_size()
        pss_empty = procstat.pss_bytes(procstat.tree(pid)) if pid else None
        t_create = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            cids = list(pool.map(lambda _: self.create(path, run_label), range(n)))
        log(f"scale {path} n={n}: created in {time.monotonic() - t_create:.0f} s")
        t_start = time.monotonic()
        with ThreadPoolExecutor(STARTS_AT_ONCE) as pool:
            starts = list(pool.map(self.start, cids))
        log(f"scale {path} n={n}: started in {time.monotonic() - t_start:.0f} s "
            f"(p50 {percentile(starts, 50):.3f} s, p99 {percentile(starts, 99):.3f} s)")
        try:
            rec = self._measure(path, n, timeout, cids, starts, run_label, pid, pss_empty, receiver)
            if plugin:
                rec["plugin_log"] = self._plugin_log_counts(log_offset)
                served = self._start_logging_seconds(log_offset)
                rec.update(start_logging_n=len(served), start_logging_p50_s=percentile(served, 50),
                           start_logging_p99_s=percentile(served, 99),
                           start_logging_max_s=max(served) if served else None)
            return rec
        finally:
            t_rm = time.monotonic()
            with ThreadPoolExecutor(8) as pool:
                # Minutes, not seconds, at 1,000: dockerd removes them one lock at a time behind the exits.
                list(pool.map(lambda c: api_json(self.sock, "DELETE", f"/containers/{c}?force=1", timeout=900), cids))
            if plugin:
                for cid in cids:
                    shutil.rmtree(bench.plugin.log_root / cid, ignore_errors=True)
            log(f"scale {path} n={n}: removed in {time.monotonic() - t_rm:.0f} s")

    def _measure(self, path, n, timeout, cids, starts, run_label, pid, pss_empty, receiver) -> dict:
        bench = self.bench
        plugin = pid is not None
        counters = [LineCounter(bench.json_log(path, cid)) for cid in cids]
        expected = n * self.rate * self.seconds
        # Settle: the pipelines of the last containers started are made; what N attached containers cost.
        time.sleep(2.0)
        sampler = PssSampler(pid)
        pss_idle = sampler.start() if plugin else None
        fds = open_fds(pid) if plugin else None
        conns_idle = conns = connections_to(receiver.port) if receiver else None
        recv_base = receiver.expect(expected) if receiver else 0
        cpu0 = bench.cpu(receiver)
        load = procstat.loadavg()
        t0 = time.monotonic()
        self.release()
        stored_at = acked_at = exit_at = None
        next_running = t0 + 1.0
        deadline = t0 + self.seconds + timeout
        while time.monotonic() < deadline:
            now = time.monotonic()
            if stored_at is None and sum(c.count() for c in counters) >= expected:
                stored_at = time.monotonic()
            if receiver and acked_at is None:
                acked_at = receiver.hit()
            if exit_at is None and now >= next_running:
                next_running = now + 1.0
                if self.running(run_label) == 0:
                    exit_at = time.monotonic()
                if receiver:
                    conns = max(conns, connections_to(receiver.port))
            if stored_at and exit_at and (acked_at or not receiver):
                break
            time.sleep(0.2)
        time.sleep(0.5)
        cpu1 = bench.cpu(receiver)
        pss_peak = sampler.stop() if plugin else None
        stored = sum(c.count() for c in counters)
        received = receiver.records() - recv_base if receiver else None

        def since(t: float | None) -> float | None:
            return round(t - t0, 2) if t is not None else None

        rec = {
            "path": path, "containers": n, "rate": self.rate, "seconds": self.seconds, "entries": expected,
            "stored_entries": stored, "received_records": received,
            "lost": max(expected - stored, expected - received if received is not None else 0),
            "start_p50_s": round(percentile(starts, 50), 4), "start_p99_s": round(percentile(starts, 99), 4),
            "start_max_s": round(max(starts), 4),
            "exit_s": since(exit_at), "stored_s": since(stored_at), "acked_s": since(acked_at),
            "dockerd_cpu_s": round(cpu1["dockerd"] - cpu0["dockerd"], 2),
            "plugin_cpu_s": round(cpu1["plugin"] - cpu0["plugin"], 2) if plugin else None,
            "receiver_cpu_s": round(cpu1["receiver"] - cpu0["receiver"], 2) if receiver else None,
            "pss_empty_mb": round(pss_empty / 1e6, 1) if pss_empty else None,
            "pss_idle_mb": round(pss_idle / 1e6, 1) if plugin else None,
            "pss_peak_mb": round(pss_peak / 1e6, 1) if plugin else None,
            "plugin_fds": fds, "plugin_nofile": nofile_limit(pid) if plugin else None,
            "receiver_connections_idle": conns_idle, "receiver_connections": conns,
            "loadavg_before": load, "loadavg_after": procstat.loadavg(),
        }
        log(f"scale {path} n={n}: " + ", ".join(f"{k} {v}" for k, v in rec.items() if v is not None))
        return rec


def slopes(records: list[dict]) -> dict:
    """Per-container cost: least-squares slope of the plugin's PSS (idle and peak) over N, in MB per container."""
    rows = [r for r in records if r["path"] != "json-file" and r.get("pss_idle_mb")]
    out = {}
    for key in ("pss_idle_mb", "pss_peak_mb"):
        fit = least_squares([r["containers"] for r in rows], [r[key] for r in rows])
        if fit:
            out[key.replace("_mb", "_slope_mb_per_container")] = round(fit[0], 4)
            out[key.replace("_mb", "_intercept_mb")] = round(fit[1], 1)
    return out


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"# logbridge scale bench (`BENCH_SCALE`) — {result['started']}", "",
             f"Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['mem_gb']} GB, kernel {m['kernel']}; dockerd "
             f"{result['dockerd_version']}; logbridge {result['git']}. Load average before/after: "
             f"{result['loadavg_start']} / {result['loadavg_end']}.", "",
             f"Each container writes {result['rate']} lines/s for {result['seconds']} s (busybox `printf` bursts "
             "once a second), all released at once after every container of the run is running (creation and "
             "start not in the times). logbridge+forward: json.log plus forward with acks to bench.receiver. "
             "start p50/p99: `POST /containers/{id}/start` (dockerd waits for StartLogging inside it), 8 at a "
             "time. stored/acked: seconds from the release. PSS: the plugin's, with N containers attached and "
             "waiting (idle) and its peak while they write. fds and connections: with N attached.", "",
             "| path | N | lines | lost | start p50 s | start p99 s | StartLogging p50/p99 ms | exit s | stored s | "
             "acked s | dockerd CPU-s | plugin CPU-s | PSS idle MB | PSS peak MB | fds | nofile | connections | "
             "load before |",
             "|" + "---|" * 18]

    def ms(v: float | None) -> str:
        return "–" if v is None else f"{v * 1000:.0f}"

    for r in result["records"]:
        served = f"{ms(r.get('start_logging_p50_s'))}/{ms(r.get('start_logging_p99_s'))}" \
            if r.get("start_logging_n") else None
        cells = [r["path"], r["containers"], f"{r['entries']:,}", r["lost"], r["start_p50_s"], r["start_p99_s"],
                 served, r["exit_s"], r["stored_s"], r["acked_s"], r["dockerd_cpu_s"], r["plugin_cpu_s"],
                 r["pss_idle_mb"], r["pss_peak_mb"], r["plugin_fds"], r["plugin_nofile"], r["receiver_connections"],
                 r["loadavg_before"][0] if r["loadavg_before"] else None]
        lines.append("| " + " | ".join("–" if c is None else str(c) for c in cells) + " |")
    s = result["slopes"]
    if s:
        lines += ["", f"Least-squares fit of the plugin's PSS over N: idle {s.get('pss_idle_slope_mb_per_container')}"
                  f" MB per container (+ {s.get('pss_idle_intercept_mb')} MB), peak "
                  f"{s.get('pss_peak_slope_mb_per_container')} MB per container (+ {s.get('pss_peak_intercept_mb')}"
                  " MB)."]
    logged = [f"{r['path']} N={r['containers']}: " + "; ".join(f"{k} ×{v}" for k, v in r["plugin_log"].items())
              for r in result["records"] if r.get("plugin_log")]
    if logged:
        lines += ["", "The plugin's warnings and errors: " + " | ".join(logged) + "."]
    if result.get("notes"):
        lines += [""] + [f"- {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"


def render(path: Path) -> int:
    """Rewrite a results file's markdown from its JSON (after a change to the tables)."""
    result = json.loads(path.read_text())
    path.with_suffix(".md").write_text(markdown(result))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(render(Path(sys.argv[1])))


def run_scale(bench: Bench, state: Path, result: dict, out: Path | None = None) -> list[dict]:
    """Every N of BENCH_SCALE, ascending, each path in turn (BENCH_SCALE_PATHS' order); the results so far are
    written to `out` after every run, so a long sitting cut short keeps its figures."""
    ns = sorted(int(v) for v in env_list("BENCH_SCALE", []))
    paths = [p for p in env_list("BENCH_SCALE_PATHS", list(PATHS)) if p in PATHS]
    rate, seconds = env_int("BENCH_SCALE_RATE", 10), env_int("BENCH_SCALE_SECONDS", 300)
    timeout = env_int("BENCH_TIMEOUT", 180)
    result.update(rate=rate, seconds=seconds, ns=ns)
    scale = ScaleRun(bench, state, rate, seconds)
    records = []
    for n in ns:
        for path in paths:
            records.append(scale.run(path, n, timeout))
            if out is not None:
                write(dict(result, loadavg_end=procstat.loadavg()), records, out)
    return records



def write(result: dict, records: list[dict], out: Path) -> int:
    result = dict(result, records=records, slopes=slopes(records))
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    md = markdown(result)
    out.with_suffix(".md").write_text(md)
    print(md)
    log(f"wrote {out}.json and {out}.md")
    return 0 if all(r["lost"] == 0 for r in records) else 1
