"""`make bench`: logbridge against Docker's own drivers on one private, real dockerd, interleaved, in one sitting.

Paths (each a `--log-driver` with its options):
  json-file          dockerd's json-file driver (the reference for every ratio)
  none               no logging at all (the floor)
  logbridge          logbridge as a managed plugin, local json.log only
  logbridge+forward  logbridge, json.log plus Fluent forward with acks to bench.receiver
  logbridge+loki     logbridge, json.log plus the direct Loki output to bench.loki_receiver (2xx = acked)
  logbridge+es       logbridge, json.log plus the Elasticsearch output to bench.elasticsearch (a count-only
                     _bulk receiver; acked = counted just before its 200)
  fluentd            dockerd's builtin fluentd driver to the same receiver

Workloads (busybox image, no registry): 1M short lines (`seq`), 1M 100-byte lines, 1,000 lines of 40 KB, and
(BENCH_CONCURRENT=1) 100 containers at once writing 2,000 lines/s each for 30 s.

For every workload the rounds are interleaved (json-file, none, logbridge, ... then again), so a paired ratio
compares runs made seconds apart. Per run: seconds until the container exited, until json.log held every entry
(all rotated files counted; max-size is set so large that nothing rotates), until the receiver had acked every
record; CPU seconds of the plugin's process tree, of dockerd and of the receiver (utime+stime from /proc, before
and after); the plugin's summed PSS when idle and at its peak (sampled every 0.2 s); lines lost.

Results: bench/results/latest.json (every run, the summaries, the machine) and latest.md (the tables).

Environment knobs (all optional):
  BENCH_RUNS=7            rounds per workload
  BENCH_LINES=1000000     lines of the short and 100-byte workloads
  BENCH_BIG_LINES=10000   lines of the 40 KB workload (400 MB: seconds for every path, not a blip)
  BENCH_WORKLOADS=short,100b,40kb   subset, in this order
  BENCH_PATHS=json-file,none,floor,logbridge,logbridge+forward,logbridge+loki,logbridge+es,fluentd   subset
                          (json-file is always kept); floor: bench/floor_plugin.py, a plugin that splices each FIFO
                          to /dev/null (what dockerd's plugin adapter costs by itself)
  BENCH_CONCURRENT=0      1: add the 100-container workload (about 1 min per path and round)
  BENCH_CONC_RUNS=1       its rounds;  BENCH_CONC_CONTAINERS=100  BENCH_CONC_SECONDS=30  BENCH_CONC_RATE=2000
  BENCH_OUTAGE=0          1: add the outage run: logbridge+forward (and logbridge+loki, logbridge+es if among the
                          paths), BENCH_OUTAGE_CONTAINERS=10 containers writing BENCH_OUTAGE_RATE=1000 lines/s each
                          while the receiver is stopped (SIGSTOP) for BENCH_OUTAGE_SECONDS=60 s; the plugin's PSS
                          through the outage (issue 5: flat within 10%; issues 9, 10: at its end ≤ 110% of its start)
  BENCH_FLUENTD_ACK=0     1: the fluentd driver waits for an ack per line (fluentd-request-ack=true)
  BENCH_PYSPY=0           1: after the measured rounds, one more run per workload and logbridge path under
                          py-spy (not in the figures); raw stacks in bench/results/pyspy-*.txt, top in latest.md
  BENCH_TIMEOUT=180       seconds a run may take before it counts its missing lines as lost
  BENCH_OUT=bench/results/latest   output path without extension
  BENCH_PLUGIN_DIR=       bench this plugin dir (config.json + rootfs/, e.g. from `make plugin`) instead of
                          building one from this checkout with plugin/build-rootfs.sh
  BENCH_STATE=            dockerd state dir (default: a fresh /tmp/lbb.XXXX, purged at the end)
  BENCH_SCALE=            e.g. 10,100,1000: instead of the workloads, N containers logging at once (bench/scale.py:
                          BENCH_SCALE_RATE=10 lines/s each for BENCH_SCALE_SECONDS=300, BENCH_SCALE_PATHS=
                          logbridge+forward,json-file); results in bench/results/scale.{json,md}
  BENCH_SWEEP=0           1: instead of the workloads, the cost curves (bench/sweep.py): line size and container
                          count at BENCH_SWEEP_MB=100 MB a point, BENCH_SWEEP_RUNS=2 rounds, BENCH_SWEEP_PATHS=...,
                          then latency at 100 lines/s and the idle cost; bench/results/sweep.{json,md}
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench import elasticsearch as es_bench
from bench import procstat
from tests.support import Dockerd, ManagedPlugin, build_plugin_dir, create_managed_plugin, import_busybox
from tests.support.procs import REPO, SupportError, alive, unix_http

API = "/v1.41"
MAX_SIZE = "20g"  # json-file and logbridge: large enough that no workload here rotates
PARTIAL = 16 * 1024  # dockerd cuts lines into 16 KiB entries
JOURNAL_MAX = "2g"  # logbridge's journal-max-size in the bench (see Bench.log_args)


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name, "")
    return [v.strip() for v in value.split(",") if v.strip()] if value.strip() else default


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------- workloads
@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    cmd: str  # busybox sh -c
    lines: int  # per container
    line_bytes: int  # bytes of output per container, newlines included
    entries_per_line: int = 1  # json.log lines / forward records per output line (16 KiB partials)
    containers: int = 1

    @property
    def entries(self) -> int:
        return self.lines * self.entries_per_line * self.containers

    def records(self, path: str) -> int:
        """What the path's receiver gets: an entry per 16 KiB chunk, but one per line for Elasticsearch and Loki
        (their outputs join the chunks, up to es-max-message-size, 1 MiB, and loki-max-line-size, 256 KiB, by
        default; a batch ends before a line whose last chunk is not in it)."""
        join_max = {es_bench.PATH: 1 << 20, "logbridge+loki": 256 << 10}.get(path, 0)
        return self.total_lines if self.line_bytes // max(self.lines, 1) <= join_max else self.entries

    @property
    def total_lines(self) -> int:
        return self.lines * self.containers

    @property
    def total_bytes(self) -> int:
        return self.line_bytes * self.containers


def _seq_bytes(n: int) -> int:
    total, digits, lo = 0, 1, 1
    while lo <= n:
        hi = min(n, lo * 10 - 1)
        total += (hi - lo + 1) * (digits + 1)
        digits, lo = digits + 1, lo * 10
    return total


def _repeat(width: int, n: int) -> str:
    # a line of `width` x's, n times: busybox yes + head (fast; tr builds the line once)
    return f"s=$(head -c {width} /dev/zero | tr '\\0' x); yes \"$s\" | head -n {n}"


def workloads() -> dict[str, Workload]:
    n = env_int("BENCH_LINES", 1_000_000)
    big = env_int("BENCH_BIG_LINES", 10_000)
    k = env_int("BENCH_CONC_CONTAINERS", 100)
    secs = env_int("BENCH_CONC_SECONDS", 30)
    rate = env_int("BENCH_CONC_RATE", 2000)
    ticks = secs * 10
    per_tick = rate // 10
    conc_lines = ticks * per_tick
    out_k = env_int("BENCH_OUTAGE_CONTAINERS", 10)
    out_secs = env_int("BENCH_OUTAGE_SECONDS", 60) + 2 * OUTAGE_MARGIN
    out_per_tick = env_int("BENCH_OUTAGE_RATE", 1000) // 10
    out_ticks = out_secs * 10
    out_lines = out_ticks * out_per_tick
    return {
        "short": Workload("short", f"{n:,} short lines (seq 1 {n})", f"seq 1 {n}", n, _seq_bytes(n)),
        "100b": Workload("100b", f"{n:,} lines of 100 bytes", _repeat(99, n), n, 100 * n),
        "40kb": Workload("40kb", f"{big:,} lines of 40 KB", _repeat(40_000, big), big, 40_001 * big,
                         entries_per_line=-(-40_000 // PARTIAL)),
        "concurrent": Workload(
            "concurrent",
            f"{k} containers at once, {rate:,} lines/s each for {secs} s",
            # 10 bursts a second: seq of the next numbers, then usleep
            f"i=0; while [ $i -lt {ticks} ]; do seq $((i*{per_tick}+1)) $((i*{per_tick}+{per_tick})); "
            f"usleep 100000; i=$((i+1)); done",
            conc_lines, _seq_bytes(conc_lines), containers=k),
        "outage": Workload(
            "outage",
            f"{out_k} containers writing {out_per_tick * 10:,} lines/s each, the receiver stopped for "
            f"{out_secs - 2 * OUTAGE_MARGIN} s",
            f"i=0; while [ $i -lt {out_ticks} ]; do seq $((i*{out_per_tick}+1)) $((i*{out_per_tick}+{out_per_tick})); "
            f"usleep 100000; i=$((i+1)); done",
            out_lines, _seq_bytes(out_lines), containers=out_k),
    }


OUTAGE_SECONDS_LABEL = f"{env_int('BENCH_OUTAGE_SECONDS', 60)} s"
OUTAGE_MARGIN = 10  # seconds of the outage workload before the receiver stops and after it resumes


class Outage:
    """Stops the receiver (SIGSTOP: a hung aggregator, connections open) from `start` to `start + seconds` after
    the run began, and samples the plugin's PSS every second meanwhile."""

    def __init__(self, receiver_pid: int, start: float, seconds: float) -> None:
        self.pid, self.start, self.end = receiver_pid, start, start + seconds
        self.samples: list[int] = []
        self._stopped = self._resumed = False
        self._next_sample = 0.0

    def tick(self, elapsed: float, sampler: PssSampler) -> None:
        if not self._stopped and elapsed >= self.start:
            os.kill(self.pid, signal.SIGSTOP)
            self._stopped = True
            log(f"outage: receiver stopped at {elapsed:.1f} s")
        if self._stopped and not self._resumed:
            if elapsed >= self._next_sample:
                self.samples.append(sampler.sample())
                self._next_sample = elapsed + 1.0
            if elapsed >= self.end:
                self.resume()
                log(f"outage: receiver resumed at {elapsed:.1f} s")

    def resume(self) -> None:
        if self._stopped and not self._resumed:
            os.kill(self.pid, signal.SIGCONT)
            self._resumed = True

    def figures(self) -> dict:
        if not self.samples:
            return {}
        first, peak = self.samples[0], max(self.samples)
        return {"outage_s": round(self.end - self.start), "outage_pss_start_mb": round(first / 1e6, 1),
                "outage_pss_max_mb": round(peak / 1e6, 1), "outage_pss_end_mb": round(self.samples[-1] / 1e6, 1),
                "outage_pss_growth_pct": round(100 * (peak - first) / first, 1),
                "outage_pss_end_pct": round(100 * self.samples[-1] / first, 1),
                "outage_pss_series_mb": [round(v / 1e6, 1) for v in self.samples]}


# ------------------------------------------------------------------------------------------------- paths
@dataclass(frozen=True)
class PathSpec:
    name: str
    stores: bool  # writes json.log: time "stored"
    forwards: bool  # sends to the receiver: time "acked"
    plugin: bool  # logbridge: plugin CPU and memory


PATHS = {
    "json-file": PathSpec("json-file", stores=True, forwards=False, plugin=False),
    "none": PathSpec("none", stores=False, forwards=False, plugin=False),
    "floor": PathSpec("floor", stores=False, forwards=False, plugin=True),  # bench/floor_plugin.py
    "logbridge": PathSpec("logbridge", stores=True, forwards=False, plugin=True),
    "logbridge+forward": PathSpec("logbridge+forward", stores=True, forwards=True, plugin=True),
    "logbridge+loki": PathSpec("logbridge+loki", stores=True, forwards=True, plugin=True),
    es_bench.PATH: PathSpec(es_bench.PATH, stores=True, forwards=True, plugin=True),
    "fluentd": PathSpec("fluentd", stores=False, forwards=True, plugin=False),
}


def floor_plugin_dir(plugin_dir: Path, out: Path) -> Path:
    """A plugin dir for bench/floor_plugin.py: logbridge's rootfs (hard links: no copy) with the script in it and
    a config.json whose entrypoint runs it on its own socket."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    subprocess.run(["cp", "-al", str(plugin_dir / "rootfs"), str(out / "rootfs")], check=True)
    (out / "rootfs" / ".docker-plugin-name").unlink(missing_ok=True)  # a link: create_managed_plugin writes it
    shutil.copyfile(REPO / "bench" / "floor_plugin.py", out / "rootfs" / "opt" / "floor_plugin.py")
    config = json.loads((plugin_dir / "config.json").read_text())
    config.update(description="logbridge bench: the floor (FIFO to /dev/null)",
                  entrypoint=[config["entrypoint"][0], "/opt/floor_plugin.py"], env=[])
    config["interface"]["socket"] = "floor.sock"
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out


OUTPUT_NAMES = {"logbridge+forward": "forward", "logbridge+loki": "loki", es_bench.PATH: "elasticsearch"}


# ------------------------------------------------------------------------------------------------- receiver
class ReceiverProc:
    """bench.receiver (or bench.loki_receiver, bench.elasticsearch: the same counter lines) in its own process; a
    thread follows its counter lines."""

    def __init__(self, module: str = "bench.receiver") -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module], cwd=REPO, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
            env=dict(os.environ, PYTHONPATH=str(REPO)), text=True, start_new_session=True)
        first = json.loads(self.proc.stdout.readline())
        self.port = first["listening"]
        self.counts_in_c = first.get("counts_in_c", False)
        self.stats: dict = {"records": 0, "acks": 0, "protocol_errors": 0, "t": time.monotonic()}
        self._lock = threading.Lock()
        self._target: int | None = None
        self._hit: float | None = None
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _follow(self) -> None:
        for line in self.proc.stdout:
            try:
                stats = json.loads(line)
            except ValueError:
                continue
            with self._lock:
                self.stats = stats
                if self._target is not None and self._hit is None and stats["records"] >= self._target:
                    self._hit = stats["t"]

    def expect(self, count: int) -> int:
        """Arm: report the time the counter reaches now + count. Returns the counter now."""
        with self._lock:
            base = self.stats["records"]
            self._target, self._hit = base + count, None
            return base

    def hit(self) -> float | None:
        with self._lock:
            return self._hit

    def records(self) -> int:
        with self._lock:
            return self.stats["records"]

    def protocol_errors(self) -> int:
        with self._lock:
            return self.stats.get("protocol_errors", 0)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ------------------------------------------------------------------------------------------------- counting
class LineCounter:
    """Complete lines in a json.log and its rotated files, reading only what was appended since last time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cur: tuple[int, int, int] | None = None  # inode, offset, lines
        self._rotated: dict[tuple[str, int, int], int] = {}

    def _count_current(self) -> int:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return 0
        try:
            st = os.fstat(fd)
            ino, off, lines = self._cur if self._cur and self._cur[0] == st.st_ino else (st.st_ino, 0, 0)
            if st.st_size < off:  # truncated (crash recovery cuts json.log back): start over
                off, lines = 0, 0
            while off < st.st_size:
                chunk = os.pread(fd, min(8 << 20, st.st_size - off), off)
                if not chunk:
                    break
                last_nl = chunk.rfind(b"\n")
                if last_nl < 0:
                    break  # a torn line: wait for the rest
                lines += chunk.count(b"\n", 0, last_nl + 1)
                off += last_nl + 1
            self._cur = (ino, off, lines)
            return lines
        finally:
            os.close(fd)

    def _count_rotated(self) -> int:
        total = 0
        parent = self.path.parent
        if not parent.is_dir():
            return 0
        prefix = self.path.name + "."
        for name in os.listdir(parent):
            if not name.startswith(prefix) or not re.fullmatch(r"\d+(\.gz)?", name[len(prefix):]):
                continue
            p = parent / name
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            key = (name, st.st_ino, st.st_size)
            if key not in self._rotated:
                opener = gzip.open if name.endswith(".gz") else open
                try:
                    with opener(p, "rb") as f:
                        self._rotated[key] = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(8 << 20), b""))
                except (OSError, EOFError):
                    continue  # still being compressed
            total += self._rotated[key]
        return total

    def count(self) -> int:
        return self._count_current() + self._count_rotated()


# ------------------------------------------------------------------------------------------------- memory sampler
class PssSampler:
    def __init__(self, pid: int | None, interval: float = 0.2) -> None:
        self.pids = procstat.tree(pid) if pid else []
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def sample(self) -> int:
        value = procstat.pss_bytes(self.pids) if self.pids else 0
        self.peak = max(self.peak, value)
        return value

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def start(self) -> int:
        idle = self.sample()
        self._thread.start()
        return idle

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        self.sample()
        return self.peak


# ------------------------------------------------------------------------------------------------- py-spy
class PySpy:
    """`py-spy record` of the plugin process (and its subprocesses) into a raw collapsed-stack file."""

    def __init__(self, pid: int, out: Path) -> None:
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.out = out
        self.proc = subprocess.Popen([exe, "record", "--pid", str(pid), "--rate", "200", "--format", "raw",
                                      "--subprocesses", "--nonblocking", "-o", str(out)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0)  # attached before the run starts

    def stop(self) -> None:
        self.proc.send_signal(2)  # SIGINT: py-spy writes the file and exits
        try:
            _, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        if not self.out.exists():
            log(f"py-spy wrote nothing: {err.decode(errors='replace')[-500:]}")


# Leaves where a thread waits (py-spy's --nonblocking mode cannot always tell): the executor's idle workers, the
# event loop's epoll, lock and condition waits. Samples ending there are left out.
IDLE_LEAVES = ("_worker (concurrent/futures/thread.py)", "EpollSelector.select (selectors.py)",
               "Condition.wait (threading.py)", "Event.wait (threading.py)",
               "Thread._wait_for_tstate_lock (threading.py)", "Queue.get (queue.py)")


def top_of_profile(raw: Path, n: int = 15) -> dict:
    """Self and total samples per function and self samples per line from py-spy's raw (collapsed) stacks,
    busy samples only (see IDLE_LEAVES)."""
    self_fn: dict[str, int] = {}
    total_fn: dict[str, int] = {}
    self_line: dict[str, int] = {}
    samples = idle = 0
    try:
        text = raw.read_text(errors="replace")
    except OSError:
        return {}
    for row in text.splitlines():
        stack, _, count = row.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        c = int(count)
        frames = [f for f in stack.split(";") if not f.startswith("process ") and not f.startswith("thread ")]
        if not frames:
            continue
        fns = [re.sub(r":\d+\)$", ")", f) for f in frames]
        if fns[-1] in IDLE_LEAVES:
            idle += c
            continue
        samples += c
        self_line[frames[-1]] = self_line.get(frames[-1], 0) + c
        self_fn[fns[-1]] = self_fn.get(fns[-1], 0) + c
        for f in set(fns):
            total_fn[f] = total_fn.get(f, 0) + c

    def top(d: dict[str, int]) -> list[list]:
        return [[k, v, round(100 * v / max(samples, 1), 1)] for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:n]]

    return {"samples": samples, "idle_samples": idle, "self_by_function": top(self_fn),
            "total_by_function": top(total_fn), "self_by_line": top(self_line), "file": raw.name}


# ------------------------------------------------------------------------------------------------- the sitting
class Bench:
    def __init__(self, dockerd: Dockerd, image: str, plugin: ManagedPlugin | None, receiver: ReceiverProc | None,
                 timeout: float, loki: ReceiverProc | None = None, es: ReceiverProc | None = None,
                 floor: ManagedPlugin | None = None) -> None:
        self.dockerd = dockerd
        self.image = image
        self.plugin = plugin
        self.floor = floor
        self.receiver = receiver
        self.loki = loki
        self.es = es
        self.timeout = timeout
        self.fluentd_ack = os.environ.get("BENCH_FLUENTD_ACK", "0") == "1"
        self._pids: dict[str, int | None] = {}

    # ---- docker ----------------------------------------------------------------------------------------
    def api(self, method: str, url: str, timeout: float = 60) -> tuple[int, bytes]:
        return unix_http(str(self.dockerd.socket), method, API + url, timeout=timeout)

    def receiver_of(self, path: str) -> ReceiverProc | None:
        """The receiver a path's output goes to (None for a path that sends nothing)."""
        if not PATHS[path].forwards:
            return None
        if path == "logbridge+loki":
            return self.loki
        return self.es if path == es_bench.PATH else self.receiver

    def log_args(self, path: str) -> list[str]:
        fwd = f"fluentd-address=tcp://127.0.0.1:{self.receiver.port}" if self.receiver else ""
        if path == "json-file":
            opts = [f"max-size={MAX_SIZE}"]
            driver = "json-file"
        elif path == "none":
            opts, driver = [], "none"
        elif path == "floor":
            opts, driver = [], self.floor.driver
        elif path == "logbridge":
            opts, driver = [f"max-size={MAX_SIZE}"], self.plugin.driver
        elif path == "logbridge+forward":
            opts, driver = [f"max-size={MAX_SIZE}", fwd], self.plugin.driver
        elif path == "logbridge+loki":  # the Loki driver's defaults otherwise (batch 1 MiB, batch-wait 1s)
            opts = [f"max-size={MAX_SIZE}", f"loki-url=http://127.0.0.1:{self.loki.port}/loki/api/v1/push"]
            driver = self.plugin.driver
        elif path == es_bench.PATH:
            opts, driver = [f"max-size={MAX_SIZE}", *es_bench.log_opts(self.es.port)], self.plugin.driver
        elif path == "fluentd":
            opts, driver = [fwd], "fluentd"
            if self.fluentd_ack:
                opts.append("fluentd-request-ack=true")
        else:
            raise ValueError(path)
        if driver == getattr(self.plugin, "driver", None):
            # The 40 KB workload is a 400 MB burst: beyond the default 256 MB journal the oldest frames an output has
            # not sent yet are dropped (by design, counted), which a throughput figure must not include.
            opts.append(f"journal-max-size={JOURNAL_MAX}")
        args = ["--log-driver", driver]
        for o in opts:
            args += ["--log-opt", o]
        return args

    def create(self, path: str, workload: Workload) -> str:
        out = self.dockerd.docker("create", "--network", "none", *self.log_args(path), self.image,
                                  "sh", "-c", workload.cmd)
        return out.stdout.decode().strip()

    def json_log(self, path: str, cid: str) -> Path:
        if path == "json-file":
            return self.dockerd.json_file_log(cid)
        return self.plugin.json_log(cid)

    def delivered(self, path: str, cids: list[str], figure: str, wait: float = 5.0) -> float | None:
        """A figure of the path's output summed over the run's containers, from the line the plugin logs when a
        container's logs are all delivered (driver/pipeline.py): ``window_full_s``, the seconds its window was full
        with more to send, waiting for acks; ``batches``, the batches acknowledged."""
        output = OUTPUT_NAMES.get(path)
        if output is None or self.plugin is None:
            return None
        pattern = re.compile(rf'{output}_{figure}\\*"?:\s*([0-9.]+)')
        deadline = time.monotonic() + wait
        while True:
            try:
                text = self.dockerd.log_path.read_text(errors="replace")
            except OSError:
                text = ""
            found = {}
            for line in text.splitlines():
                if "logs delivered" in line:
                    for cid in cids:
                        if cid[:12] in line and (m := pattern.search(line)):
                            found[cid] = float(m[1])
            if len(found) == len(cids) or time.monotonic() > deadline:
                return round(sum(found.values()), 3) if found else None
            time.sleep(0.1)

    def plugin_pid(self, path: str = "logbridge") -> int | None:
        """The process of the plugin a path logs through: the floor's for `floor`, else logbridge's."""
        plugin = self.floor if path == "floor" else self.plugin
        if plugin is None:
            return None
        pid = self._pids.get(plugin.name)
        if not pid or not alive(pid):
            pid = self._pids[plugin.name] = plugin.pid()
        return pid

    def cpu(self, receiver: ReceiverProc | None, path: str = "logbridge") -> dict[str, float]:
        pid = self.plugin_pid(path)
        return {
            "plugin": procstat.tree_cpu(pid) if pid else 0.0,
            "dockerd": procstat.cpu_seconds(self.dockerd.pid() or 0),
            "receiver": procstat.cpu_seconds(receiver.pid) if receiver else 0.0,
        }

    # ---- one run ---------------------------------------------------------------------------------------
    def run(self, path: str, workload: Workload, round_no: int, pyspy_out: Path | None = None,
            outage: Outage | None = None) -> dict:
        spec = PATHS[path]
        receiver = self.receiver_of(path)
        with ThreadPoolExecutor(8) as pool:
            cids = list(pool.map(lambda _: self.create(path, workload), range(workload.containers)))
        counters = [LineCounter(self.json_log(path, cid)) for cid in cids] if spec.stores else []
        expected = workload.entries
        os.sync()  # the previous run's dirty pages are not this run's cost
        time.sleep(0.3)
        exits: dict[str, float] = {}

        def waiter(cid: str) -> None:
            status, body = self.api("POST", f"/containers/{cid}/wait?condition=next-exit", timeout=self.timeout + 60)
            exits[cid] = time.monotonic()

        waiters = [threading.Thread(target=waiter, args=(cid,), daemon=True) for cid in cids]
        for w in waiters:
            w.start()
        time.sleep(0.2)  # the wait requests are registered before the containers start
        spy = PySpy(self.plugin_pid(path), pyspy_out) if pyspy_out else None
        sampler = PssSampler(self.plugin_pid(path) if spec.plugin else None)
        load = procstat.loadavg()
        recv_expected = workload.records(path)
        recv_base = receiver.expect(recv_expected) if receiver else 0
        cpu0 = self.cpu(receiver, path)
        pss_idle = sampler.start()
        t0 = time.monotonic()
        if len(cids) == 1:
            status, body = self.api("POST", f"/containers/{cids[0]}/start")
            if status >= 300:
                raise SupportError(f"start failed: {status} {body[:300]!r}")
        else:
            with ThreadPoolExecutor(16) as pool:
                for status, body in pool.map(lambda c: self.api("POST", f"/containers/{c}/start"), cids):
                    if status >= 300:
                        raise SupportError(f"start failed: {status} {body[:300]!r}")
        stored_at = acked_at = None
        stored = 0
        deadline = t0 + self.timeout
        while True:
            now = time.monotonic()
            if outage:
                outage.tick(now - t0, sampler)
            if spec.stores and stored_at is None:
                stored = sum(c.count() for c in counters)
                if stored >= expected:
                    stored_at = time.monotonic()
            if spec.forwards and acked_at is None:
                acked_at = receiver.hit()
            done = (len(exits) == len(cids) and (stored_at or not spec.stores) and (acked_at or not spec.forwards))
            if done or now > deadline:
                break
            time.sleep(0.01)
        exit_at = max(exits.values()) if len(exits) == len(cids) else None
        time.sleep(0.2)  # what the plugin does right after (cursor saves, closing) is part of its cost
        cpu1 = self.cpu(receiver, path)
        pss_peak = sampler.stop()
        if spy:
            spy.stop()
        if spec.stores:
            stored = sum(c.count() for c in counters)
        received = receiver.records() - recv_base if receiver else 0
        dual_cache = any((self.dockerd.data_root / "containers" / cid / "container-cached.log").exists()
                         for cid in cids)
        lost = 0
        if spec.stores:
            lost = max(lost, expected - stored)
        if spec.forwards:
            lost = max(lost, recv_expected - received)
        complete_at = max(t for t in (exit_at, stored_at, acked_at) if t is not None) if exit_at else None
        if (spec.stores and not stored_at) or (spec.forwards and not acked_at):
            complete_at = None

        def since(t: float | None) -> float | None:
            return round(t - t0, 4) if t is not None else None

        mlines = workload.total_lines / 1e6
        complete_s = since(complete_at)
        rec = {
            "workload": workload.name, "path": path, "round": round_no, "containers": len(cids),
            "lines": workload.total_lines, "entries": expected, "bytes": workload.total_bytes, "nproc": os.cpu_count(),
            "exit_s": since(exit_at), "stored_s": since(stored_at), "acked_s": since(acked_at),
            "complete_s": complete_s,
            "lines_per_s": round(workload.total_lines / complete_s) if complete_s else None,
            "mb_per_s": round(workload.total_bytes / 1e6 / complete_s, 2) if complete_s else None,
            "plugin_cpu_s": round(cpu1["plugin"] - cpu0["plugin"], 3) if spec.plugin else None,
            "dockerd_cpu_s": round(cpu1["dockerd"] - cpu0["dockerd"], 3),
            "receiver_cpu_s": round(cpu1["receiver"] - cpu0["receiver"], 3) if spec.forwards else None,
            "pss_idle_mb": round(pss_idle / 1e6, 1) if spec.plugin else None,
            "pss_peak_mb": round(pss_peak / 1e6, 1) if spec.plugin else None,
            "stored_entries": stored if spec.stores else None,
            "received_records": received if spec.forwards else None,
            "lost": lost, "duplicates": max(0, received - recv_expected) if spec.forwards else 0,
            "dual_logging_cache": dual_cache, "loadavg_before": load,
            "window_full_s": self.delivered(path, cids, "window_full_s") if spec.plugin and spec.forwards else None,
            "batches": self.delivered(path, cids, "batches") if spec.plugin and spec.forwards else None,
            **(outage.figures() if outage else {}),
        }
        for key in ("plugin", "dockerd", "receiver"):
            v = rec[f"{key}_cpu_s"]
            rec[f"{key}_cpu_per_m"] = round(v / mlines, 3) if v is not None else None
            rec[f"{key}_cpu_per_gb"] = round(v / (workload.total_bytes / 1e9), 3) if v is not None else None
        self.cleanup(path, cids)
        return rec

    def cleanup(self, path: str, cids: list[str]) -> None:
        self.dockerd.docker("rm", "-f", *cids, check=False, timeout=300)
        if PATHS[path].plugin and path != "floor":
            for cid in cids:
                shutil.rmtree(self.plugin.log_root / cid, ignore_errors=True)


# ------------------------------------------------------------------------------------------------- summaries
FIGURES = ["exit_s", "stored_s", "acked_s", "complete_s", "lines_per_s", "mb_per_s", "plugin_cpu_s",
           "plugin_cpu_per_m", "dockerd_cpu_per_m", "receiver_cpu_per_m", "plugin_cpu_per_gb", "dockerd_cpu_per_gb",
           "receiver_cpu_per_gb", "pss_idle_mb", "pss_peak_mb", "lost", "outage_pss_start_mb", "outage_pss_max_mb",
           "outage_pss_end_mb", "outage_pss_growth_pct", "outage_pss_end_pct", "window_full_s", "batches"]
PER_GB = {"40kb"}  # workloads whose CPU the table shows per GB of output rather than per million lines


def stat(values: list[float]) -> dict | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": round(statistics.median(values), 4), "min": min(values), "max": max(values), "n": len(values)}


def summarise(runs: list[dict]) -> dict:
    out: dict = {}
    for wl in dict.fromkeys(r["workload"] for r in runs):
        ref = {r["round"]: r for r in runs if r["workload"] == wl and r["path"] == "json-file"}
        floor = {r["round"]: r for r in runs if r["workload"] == wl and r["path"] == "floor"}
        out[wl] = {}
        for path in dict.fromkeys(r["path"] for r in runs if r["workload"] == wl):
            mine = [r for r in runs if r["workload"] == wl and r["path"] == path]
            s = {f: stat([r.get(f) for r in mine]) for f in FIGURES}
            s["dual_logging_cache"] = sorted({r["dual_logging_cache"] for r in mine})
            if path != "json-file":
                ratios: dict[str, list[float]] = {"exit": [], "complete": [], "cpu_floor": [], "floor": []}
                for r in mine:
                    j = ref.get(r["round"])
                    if not j:
                        continue
                    if r["exit_s"] and j["exit_s"]:
                        ratios["exit"].append(round(r["exit_s"] / j["exit_s"], 3))
                    if r["complete_s"] and j["stored_s"] and (PATHS[path].stores or PATHS[path].forwards):
                        ratios["complete"].append(round(r["complete_s"] / j["stored_s"], 3))
                    # The time the CPU work alone takes on every core: the plugin, dockerd and the receiver.
                    cpu = sum(r.get(f"{k}_cpu_s") or 0 for k in ("plugin", "dockerd", "receiver"))
                    if cpu and j["stored_s"]:
                        ratios["cpu_floor"].append(round(cpu / (r.get("nproc") or os.cpu_count()) / j["stored_s"], 3))
                    f = floor.get(r["round"])
                    done = r["complete_s"] if PATHS[path].stores or PATHS[path].forwards else r["exit_s"]
                    if f and f["exit_s"] and done:
                        ratios["floor"].append(round(done / f["exit_s"], 3))
                s["ratio_exit"] = stat(ratios["exit"])
                s["ratio_complete"] = stat(ratios["complete"])
                s["ratio_cpu_floor"] = stat(ratios["cpu_floor"])
                s["ratio_floor"] = stat(ratios["floor"])
            out[wl][path] = s
    return out


def targets(summary: dict) -> list[dict]:
    """Issue 5's targets, judged on the medians of the paired ratios and figures of the short-line workload."""
    rows = []
    short = summary.get("short", {})

    def med(path: str, key: str) -> float | None:
        v = short.get(path, {}).get(key)
        return v["median"] if v else None

    def add(what: str, value: float | None, limit: float, unit: str = "") -> None:
        rows.append({"target": what, "value": value, "limit": limit, "unit": unit,
                     "met": None if value is None else value <= limit})

    add("(c) every line stored, × json-file", med("logbridge", "ratio_complete"), 1.25, "×")
    add("(c) container exit, × json-file", med("logbridge", "ratio_exit"), 1.2, "×")
    add("(c) plugin CPU per 1M short lines", med("logbridge", "plugin_cpu_per_m"), 3.0, "CPU-s")
    add("(d) every line stored and acked, × json-file", med("logbridge+forward", "ratio_complete"), 1.75, "×")
    add("(d) plugin CPU per 1M short lines", med("logbridge+forward", "plugin_cpu_per_m"), 4.5, "CPU-s")
    add("(issue 9) every line stored and acknowledged by Loki (2xx), × json-file",
        med("logbridge+loki", "ratio_complete"), 1.5, "×")
    add("(issue 9) plugin CPU per 1M short lines, + Loki", med("logbridge+loki", "plugin_cpu_per_m"), 2.0, "CPU-s")
    rows += es_bench.targets(med, summary.get("outage", {}).get(es_bench.PATH, {}), OUTAGE_SECONDS_LABEL)
    ours = [(w, p) for w in summary for p in summary[w] if p != "floor"]  # the floor is not logbridge
    idle = [summary[w][p]["pss_idle_mb"]["median"] for w, p in ours
            if summary[w][p].get("pss_idle_mb") and w != "concurrent"]
    fresh = [summary[w][p]["pss_idle_mb"]["min"] for w, p in ours if summary[w][p].get("pss_idle_mb")]
    add("plugin memory idle, fresh plugin (PSS before its first container)", min(fresh) if fresh else None, 50, "MB")
    add("plugin memory idle after use (PSS, worst median)", max(idle) if idle else None, 50, "MB")
    conc = summary.get("concurrent", {})
    peaks = [conc[p]["pss_peak_mb"]["max"] for p in conc if conc[p].get("pss_peak_mb")]
    if peaks:
        add("plugin memory with 100 containers (PSS peak)", max(peaks), 150, "MB")
    growth = summary.get("outage", {}).get("logbridge+forward", {}).get("outage_pss_growth_pct")
    if growth:
        add(f"plugin memory during a {OUTAGE_SECONDS_LABEL} aggregator outage (PSS growth)", growth["max"], 10, "%")
    at_end = summary.get("outage", {}).get("logbridge+loki", {}).get("outage_pss_end_pct")
    if at_end:
        add(f"(issue 9) plugin PSS at the end of a {OUTAGE_SECONDS_LABEL} Loki outage, % of its start",
            at_end["max"], 110, "%")
    lost = [r["lost"]["max"] for w in summary.values() for r in w.values() if r.get("lost")]
    add("lines lost in any run", max(lost) if lost else None, 0, "lines")
    return rows


# ------------------------------------------------------------------------------------------------- markdown
def cell(s: dict | None, fmt: str = "{:.2f}") -> str:
    if not s:
        return "–"
    if s["n"] == 1 or s["min"] == s["max"]:
        return fmt.format(s["median"])
    return f"{fmt.format(s['median'])} ({fmt.format(s['min'])}–{fmt.format(s['max'])})"


def _single_runs(result: dict) -> str:
    """The workloads that ran a different number of rounds (a table of one run shows no min–max)."""
    rounds = result.get("conc_runs", 1)
    single = [w for w in result.get("workloads", {})
              if w == "outage" or (w == "concurrent" and rounds != result["runs"])]
    if not single:
        return ""
    counts = ", ".join(f"{w}: {1 if w == 'outage' else rounds}" for w in single)
    return f" ({counts})"


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        f"# logbridge `make bench` — {result['started']}",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['mem_gb']} GB, kernel {m['kernel']}; "
        f"dockerd {result['dockerd_version']}; logbridge {result['git']}. "
        f"Load average before/after: {result['loadavg_start']} / {result['loadavg_end']}.",
        "",
        f"{result['runs']} interleaved rounds per workload{_single_runs(result)}; each cell is the median (min–max). "
        "json-file and "
        f"logbridge use `max-size={MAX_SIZE}` (nothing rotates), logbridge `journal-max-size={JOURNAL_MAX}` (the 40 KB "
        "workload is a 400 MB burst, beyond the default 256 MB journal). Times are seconds from `start` until the "
        "container(s) exited, until json.log held every entry, until the receiver had acked every record. "
        "lines/s and MB/s are over the time until everything was stored and acked (exit for `none`). CPU is "
        "utime+stime per million lines: the plugin's process tree, dockerd alone (not containerd or shims), "
        "the receiver (bench.receiver: driver.receiver's server, acks on; "
        + ("it validates and counts PackedForward entries in C without building objects, as Fluent Bit walks them"
           if result.get("receiver_counts_in_c") else "it decodes every entry in Python") +
        "; for logbridge+loki bench.loki_receiver: snappy block and protobuf decoded as Loki does, "
        + ("the protobuf library's C backend parsing, entries only counted"
           if result.get("loki_receiver_counts_in_c") else "the pure-Python protobuf parsing")
        + ", acked = counted just before its 204"
        "; for logbridge+es bench.elasticsearch: documents counted with bytes.count over the NDJSON, nothing kept"
        "). Memory is the plugin's summed PSS. "
        "Ratios are paired with the json-file run of the same round: exit vs exit, stored/acked vs json-file "
        "stored. `floor` is bench/floor_plugin.py, a plugin that splices every FIFO to /dev/null: what dockerd's "
        "plugin adapter costs by itself. CPU floor × json-file: (plugin + dockerd + receiver CPU-s) / CPUs over "
        "json-file's stored time, the ratio no overlap can beat (it leaves out containerd-shim and the container's "
        "own process); stored/acked × floor exit: the time to every line stored/acked over the floor's exit time "
        "in the same round (exit for `none` and `floor`).",
        "",
    ]
    if result.get("notes"):
        lines += [f"- {n}" for n in result["notes"]] + [""]
    for wl, paths in result["summary"].items():
        unit, per = ("GB", "per_gb") if wl in PER_GB else ("M", "per_m")
        lines += [f"## {result['workloads'][wl]}", "",
                  f"| path | exit s | stored s | acked s | lines/s | MB/s | plugin CPU-s/{unit} | "
                  f"dockerd CPU-s/{unit} | receiver CPU-s/{unit} | PSS idle MB | PSS peak MB | lost | "
                  "exit × json-file | "
                  "stored/acked × json-file | CPU floor × json-file | stored/acked × floor exit |",
                  "|" + "---|" * 16]
        after: list[str] = []  # the outage paragraphs, below the table
        for path, s in paths.items():
            lines.append("| " + " | ".join([
                path, cell(s["exit_s"]), cell(s["stored_s"]), cell(s["acked_s"]), cell(s["lines_per_s"], "{:,.0f}"),
                cell(s["mb_per_s"], "{:.1f}"), cell(s.get(f"plugin_cpu_{per}")), cell(s.get(f"dockerd_cpu_{per}")),
                cell(s.get(f"receiver_cpu_{per}")), cell(s["pss_idle_mb"], "{:.1f}"), cell(s["pss_peak_mb"], "{:.1f}"),
                cell(s["lost"], "{:.0f}"), cell(s.get("ratio_exit")), cell(s.get("ratio_complete")),
                cell(s.get("ratio_cpu_floor")), cell(s.get("ratio_floor")),
            ]) + " |")
            if s.get("outage_pss_max_mb"):
                mb = {k: cell(s[f"outage_pss_{k}_mb"], "{:.1f}") for k in ("start", "max", "end")}
                end_pct = f", end {cell(s['outage_pss_end_pct'], '{:.1f}')} % of start" \
                    if s.get("outage_pss_end_pct") else ""
                after += ["", f"{path}: plugin PSS while the receiver was stopped: {mb['start']} MB when it stopped, "
                          f"at most {mb['max']} MB, {mb['end']} MB when it resumed "
                          f"(growth {cell(s['outage_pss_growth_pct'], '{:.1f}')} %{end_pct})."]
        waits = [f"{path} {cell(s['window_full_s'])} s" for path, s in paths.items() if s.get("window_full_s")]
        if waits:
            after += ["", "Time with the output's window full, waiting for acks with more to send (per run, summed "
                      "over its containers): " + ", ".join(waits) + "."]
        sizes = [f"{path} {cell(s['batches'], '{:,.0f}')}" for path, s in paths.items() if s.get("batches")]
        if sizes:
            after += ["", "Batches each run's output had acknowledged (a batch's cost is paid per batch, not per "
                      "line): " + ", ".join(sizes) + "."]
        lines += after
        lines.append("")
    lines += ["## Targets (issue 5; short-line medians)", "", "| target | value | limit | met |", "|---|---|---|---|"]
    for t in result["targets"]:
        v = "–" if t["value"] is None else f"{t['value']:g} {t['unit']}"
        met = "n/a" if t["met"] is None else ("yes" if t["met"] else "**no**")
        lines.append(f"| {t['target']} | {v} | {t['limit']:g} {t['unit']} | {met} |")
    lines.append("")
    for prof in result.get("profiles", []):
        if not prof.get("samples"):
            continue
        lines += [f"## py-spy: plugin during {prof['workload']} / {prof['path']} (extra run, not in the figures)", "",
                  f"{prof['samples']} busy samples at 200 Hz over all threads ({prof['idle_samples']} idle ones left "
                  f"out); plugin "
                  f"{prof['plugin_cpu_s']} CPU-s, complete after {prof['complete_s']} s; raw stacks: "
                  f"`bench/results/{prof['file']}`.", "",
                  "| self % | function | | total % | function |", "|---|---|---|---|---|"]
        for a, b in zip(prof["self_by_function"], prof["total_by_function"], strict=False):
            lines.append(f"| {a[2]} | `{a[0]}` | | {b[2]} | `{b[0]}` |")
        lines += ["", "| self % | line |", "|---|---|"]
        lines += [f"| {x[2]} | `{x[0]}` |" for x in prof["self_by_line"][:10]]
        lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- main
def git_describe() -> str:
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no", "driver"],
                               capture_output=True, text=True).stdout.strip()
        return head + ("+uncommitted driver/ changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def protobuf_implementation(rootfs: Path) -> str:
    """Which protobuf backend the plugin's Python gets (upb, or the pure-Python fallback when the C extension
    cannot load), asked inside its rootfs."""
    code = "from google.protobuf.internal import api_implementation as a; print(a.Type())"
    python = json.loads((REPO / "config.json").read_text())["entrypoint"][0]
    proc = subprocess.run(["chroot", str(rootfs), python, "-c", code], capture_output=True, text=True)
    return proc.stdout.strip() or f"unknown ({proc.stderr.strip()[-200:]})"


def render(path: Path) -> int:
    """Recompute the summaries and tables of a results JSON (after a change to this module's reporting)."""
    result = json.loads(path.read_text())
    wls = workloads()
    for rec in result["records"]:
        wl = wls[rec["workload"]]
        gb = rec["bytes"] / 1e9
        for key in ("plugin", "dockerd", "receiver"):
            v = rec.get(f"{key}_cpu_s")
            rec[f"{key}_cpu_per_gb"] = round(v / gb, 3) if v is not None and wl.total_bytes else None
    result["summary"] = summarise(result["records"])
    result["targets"] = targets(result["summary"])
    path.write_text(json.dumps(result, indent=1) + "\n")
    md = markdown(result)
    path.with_suffix(".md").write_text(md)
    print(md)
    return 0


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--render":
        return render(Path(sys.argv[2]))
    if os.geteuid() != 0:
        print("make bench needs root (it runs a private dockerd)", file=sys.stderr)
        return 1
    runs_n = env_int("BENCH_RUNS", 7)
    all_wl = workloads()
    wanted = env_list("BENCH_WORKLOADS", ["short", "100b", "40kb"])
    if os.environ.get("BENCH_CONCURRENT", "0") == "1" and "concurrent" not in wanted:
        wanted.append("concurrent")
    if os.environ.get("BENCH_OUTAGE", "0") == "1" and "outage" not in wanted:
        wanted.append("outage")
    paths = env_list("BENCH_PATHS", list(PATHS))
    scale_mode = bool(os.environ.get("BENCH_SCALE", "").strip())  # bench.scale instead of the workloads
    if scale_mode:
        from bench import scale
        wanted, paths = [], list(scale.PATHS)
    sweep_mode = os.environ.get("BENCH_SWEEP", "0") == "1"  # bench.sweep: the cost curves instead
    if sweep_mode:
        from bench import sweep
        wanted, paths = [], sweep.wanted_paths()
    if "json-file" not in paths:
        paths.insert(0, "json-file")
    unknown = [p for p in paths if p not in PATHS] + [w for w in wanted if w not in all_wl]
    if unknown:
        print(f"unknown path or workload: {unknown}", file=sys.stderr)
        return 2
    default_out = "scale" if scale_mode else "sweep" if sweep_mode else "latest"
    out = Path(os.environ.get("BENCH_OUT", str(REPO / "bench" / "results" / default_out)))
    out.parent.mkdir(parents=True, exist_ok=True)
    timeout = env_int("BENCH_TIMEOUT", 180)
    state = os.environ.get("BENCH_STATE") or tempfile.mkdtemp(prefix="lbb.", dir="/tmp")
    dockerd = Dockerd(state)
    plugin = receiver = loki = es = floor = None
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    result: dict = {"started": started, "machine": procstat.machine(), "git": git_describe(), "runs": runs_n,
                    "loadavg_start": procstat.loadavg(), "max_size": MAX_SIZE,
                    "workloads": {w: all_wl[w].title for w in wanted}, "paths": paths, "notes": []}
    records: list[dict] = []
    profiles: list[dict] = []
    try:
        log(f"dockerd in {state}")
        dockerd.start()
        image = import_busybox(dockerd)
        result["dockerd_version"] = dockerd.docker("version", "-f", "{{.Server.Version}}").stdout.decode().strip()
        if any(PATHS[p].plugin for p in paths):
            log("plugin rootfs (cached by content) and docker plugin create")
            plugin_dir = Path(os.environ.get("BENCH_PLUGIN_DIR") or build_plugin_dir(Path(state) / "plugin-dir"))
        if "floor" in paths:
            floor = create_managed_plugin(dockerd, floor_plugin_dir(plugin_dir, Path(state) / "floor-dir"),
                                          f"lbfloor-{secrets.token_hex(3)}", log_root=Path(state) / "floor-logs",
                                          state_dir=Path(state) / "floor-state")
            log(f"floor plugin {floor.name} enabled")
        if any(PATHS[p].plugin and p != "floor" for p in paths):
            plugin = create_managed_plugin(dockerd, plugin_dir, f"lbbench-{secrets.token_hex(3)}",
                                           log_root=Path(state) / "plugin-logs",
                                           state_dir=Path(state) / "plugin-state",
                                           env={"LOG_LEVEL": "debug"} if scale_mode else None)
            result["plugin_protobuf"] = protobuf_implementation(plugin.rootfs)
            log(f"plugin's protobuf implementation: {result['plugin_protobuf']}")
        if "logbridge+loki" in paths:
            loki = ReceiverProc("bench.loki_receiver")
            result["loki_receiver_counts_in_c"] = loki.counts_in_c
            log(f"loki receiver on 127.0.0.1:{loki.port}, parsing in {'C (upb)' if loki.counts_in_c else 'Python'}")
        if es_bench.PATH in paths:
            es = ReceiverProc("bench.elasticsearch")
            log(f"elasticsearch receiver on 127.0.0.1:{es.port}, counting documents with bytes.count (C)")
        if any(PATHS[p].forwards and p not in ("logbridge+loki", es_bench.PATH) for p in paths):
            receiver = ReceiverProc()
            result["receiver_counts_in_c"] = receiver.counts_in_c
            log(f"receiver on 127.0.0.1:{receiver.port}, counting in {'C' if receiver.counts_in_c else 'Python'}")
        bench = Bench(dockerd, image, plugin, receiver, timeout, loki, es, floor)
        result["fluentd_request_ack"] = bench.fluentd_ack
        if scale_mode:
            records = scale.run_scale(bench, Path(state), result, out)
        if sweep_mode:
            return sweep.run_sweep(bench, result, out)
        for wl_name in wanted:
            wl = all_wl[wl_name]
            if wl_name == "outage":
                if plugin is None:
                    log("outage: needs the logbridge paths, skipped")
                    continue
                if receiver is None:
                    receiver = bench.receiver = ReceiverProc()
                outage_paths = ["logbridge+forward", *(["logbridge+loki"] if loki else []),
                                *([es_bench.PATH] if es else [])]
                for path in outage_paths:
                    outage = Outage(bench.receiver_of(path).pid, OUTAGE_MARGIN, env_int("BENCH_OUTAGE_SECONDS", 60))
                    try:
                        rec = bench.run(path, wl, 1, outage=outage)
                    finally:
                        outage.resume()
                    records.append(rec)
                    log(f"outage {path}: acked {rec['acked_s']} s  pss {rec.get('outage_pss_start_mb')} -> "
                        f"max {rec.get('outage_pss_max_mb')} -> end {rec.get('outage_pss_end_mb')} MB  "
                        f"lost {rec['lost']}")
                continue
            n = env_int("BENCH_CONC_RUNS", 1) if wl_name == "concurrent" else runs_n
            if wl_name == "concurrent":
                result["conc_runs"] = n
            for rnd in range(1, n + 1):
                for path in paths:
                    rec = bench.run(path, wl, rnd)
                    records.append(rec)
                    log(f"{wl_name} r{rnd} {path:18} exit {rec['exit_s']}  stored {rec['stored_s']}  "
                        f"acked {rec['acked_s']}  plugin {rec['plugin_cpu_s']} CPU-s  dockerd "
                        f"{rec['dockerd_cpu_s']} CPU-s  pss {rec['pss_idle_mb']}/{rec['pss_peak_mb']} MB  "
                        f"lost {rec['lost']}  batches {rec.get('batches')}")
            if os.environ.get("BENCH_PYSPY", "0") == "1":
                for path in paths:
                    if PATHS[path].plugin:
                        raw = out.parent / f"pyspy-{wl_name}-{path.replace('+', '-')}.txt"
                        rec = bench.run(path, wl, 0, pyspy_out=raw)
                        prof = top_of_profile(raw)
                        prof.update(workload=wl_name, path=path, plugin_cpu_s=rec["plugin_cpu_s"],
                                    complete_s=rec["complete_s"])
                        profiles.append(prof)
                        log(f"{wl_name} py-spy {path}: {prof.get('samples')} samples in {raw}")
    finally:
        result["loadavg_end"] = procstat.loadavg()
        for r in (receiver, loki, es):
            if r:
                r.stop()
        try:
            for p in (plugin, floor):
                if p:
                    p.remove()
        finally:
            if not os.environ.get("BENCH_STATE"):
                dockerd.stop(purge=True)
            else:
                dockerd.stop()
    if not records:
        return 1
    if scale_mode:
        return scale.write(result, records, out)
    if result.get("plugin_protobuf") == "python":
        result["notes"].append("the plugin's protobuf runs its pure-Python fallback (its C extension did not load "
                               "in the plugin rootfs): frame decoding is several times slower than with upb")
    if receiver and receiver.protocol_errors():
        result["notes"].append(f"receiver protocol errors: {receiver.protocol_errors()}")
    if loki and loki.protocol_errors():
        result["notes"].append(f"loki receiver answers other than 2xx: {loki.protocol_errors()}")
    if es and es.protocol_errors():
        result["notes"].append(f"elasticsearch receiver: bodies that were not create pairs: {es.protocol_errors()}")
    if any(r["path"] == "logbridge" and r["dual_logging_cache"] for r in records):
        result["notes"].append("dockerd kept a dual-logging cache for logbridge containers")
    elif any(r["path"].startswith("logbridge") for r in records):
        result["notes"].append("dockerd kept no dual-logging cache for logbridge (it serves ReadLogs); it does "
                               "for fluentd (container-cached.log), which is Docker's default and part of (e)'s cost")
    result["summary"] = summarise(records)
    result["targets"] = targets(result["summary"])
    result["records"] = records
    result["profiles"] = profiles
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    md = markdown(result)
    out.with_suffix(".md").write_text(md)
    print(md)
    log(f"wrote {out}.json and {out}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
