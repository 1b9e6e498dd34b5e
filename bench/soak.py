"""`make soak` (issue 11.7): logbridge for SOAK_MINUTES under faults, on a private real dockerd.

SOAK_CONTAINERS busybox containers write numbered lines (`<name> <incarnation> <seq>`) at SOAK_RATE lines/s each to
logbridge, the managed plugin, with json.log rotating (max-size 50k, max-file 3, compressed for every third
container) and forward on (record ids on) to a driver.receiver that writes every record it acks to a file. On a
schedule, one fault a SOAK_FAULT_SECONDS: a few containers restarted (`docker restart`), the plugin process SIGKILLed
(dockerd restarts it), the aggregator stopped (SIGSTOP, SOAK_OUTAGE_SECONDS) or killed and started again after
SOAK_OUTAGE_SECONDS/2; the last SOAK_QUIET_SECONDS have none. Every SOAK_SAMPLE_SECONDS a CSV row: lines handed
over, stored (distinct in json.log, rotated files included, read as they rotate), acked (distinct at the
aggregator), lost so far, duplicated, the plugin's PSS, open fds, journal bytes. At the end the containers are
stopped, everything drains, and SOAK_OUT.csv, .png (matplotlib: `pip install -e '.[bench]'`) and .md are written.

Written, per container incarnation: the count its TERM trap saved in the container's /tmp (docker stop and docker
restart send TERM; the writer finishes its burst and records how many lines it wrote), read back with docker cp. An
incarnation without one (stopped by SIGKILL after the grace period) counts what dockerd handed over by the gap-free
prefix rule of tests/e2e/test_dockerd_kill.py: one past the highest seq that reached json.log or the aggregator.

Fails (exit 1) when: lost = written − stored − counted drops is not 0; a json.log holds a line twice; the
aggregator lacks a stored line, or holds more duplicates of a container than one batch (BATCH_BYTES) per fault that
may resend (plugin kill, aggregator kill or stop); the PSS grows: least-squares slope over the last 2/3 of the run
(20 of 30 minutes), one intercept per plugin process and its first SOAK_WARMUP_SECONDS left out, above 1 MB per 10
minutes; or more fds at the end than at 1/3 of the run (minute 10 of 30), each the median of a minute of samples
taken with the aggregator up.

Knobs: SOAK_MINUTES=30 SOAK_CONTAINERS=50 SOAK_RATE=20 SOAK_SAMPLE_SECONDS=10 SOAK_FAULT_SECONDS=60
SOAK_OUTAGE_SECONDS=40 SOAK_QUIET_SECONDS=120 SOAK_WARMUP_SECONDS=60 SOAK_FAULTS=restart,receiver_stop,restart,
plugin_kill,restart,receiver_kill (the cycle) SOAK_OUT=bench/results/soak SOAK_STATE= (dockerd state dir; default
a fresh /tmp/lbs.XXXX, purged) SOAK_PLUGIN_DIR= (a built plugin dir instead of building one from this checkout).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import random
import secrets
import signal
import statistics
import sys
import tarfile
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from bench import procstat
from bench.run import env_int, env_list, git_describe, log
from bench.soak_lines import JsonLogFiles, RecordsFile, SeqTally
from driver import status
from driver.frames import encode_entry
from driver.outputs.forward.sink import BATCH_BYTES
from tests.support import Dockerd, ManagedPlugin, build_plugin_dir, create_managed_plugin, import_busybox
from tests.support.procs import REPO, SupportError, wait_for
from tests.support.receiver import ReceiverProcess

ROTATION = {"max-size": "50k", "max-file": "3"}
SCAN_SECONDS = 2.0  # between reads of the json.log files and the aggregator's records, samples or not
RESENDING_FAULTS = ("plugin_kill", "receiver_kill", "receiver_stop")  # faults after which a batch may come twice
# The writer: a new incarnation per start; bursts of $B lines every $T µs until TERM, then the count it wrote.
WRITER = ('n=$(( $(cat /tmp/inc 2>/dev/null || echo 0) + 1 )); echo $n > /tmp/inc; i=0; stop=0; '
          "trap 'stop=1' TERM; "
          'while [ $stop = 0 ]; do j=0; while [ $j -lt $B ]; do echo "$NAME $n $i"; i=$((i+1)); j=$((j+1)); done; '
          'usleep $T; done; echo $i > /tmp/w.$n')


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name, "")
    return float(value) if value.strip() else default


@dataclass(frozen=True)
class Config:
    minutes: float = 30
    containers: int = 50
    rate: int = 20  # lines/s per container
    sample_s: float = 10
    fault_s: float = 60
    outage_s: float = 40
    quiet_s: float = 120
    warmup_s: float = 60
    faults: tuple[str, ...] = ("restart", "receiver_stop", "restart", "plugin_kill", "restart", "receiver_kill")
    restart_k: int = 5  # containers per restart fault

    @classmethod
    def from_env(cls) -> Config:
        d = cls()
        return cls(minutes=env_float("SOAK_MINUTES", d.minutes), containers=env_int("SOAK_CONTAINERS", d.containers),
                   rate=env_int("SOAK_RATE", d.rate), sample_s=env_float("SOAK_SAMPLE_SECONDS", d.sample_s),
                   fault_s=env_float("SOAK_FAULT_SECONDS", d.fault_s),
                   outage_s=env_float("SOAK_OUTAGE_SECONDS", d.outage_s),
                   quiet_s=env_float("SOAK_QUIET_SECONDS", d.quiet_s),
                   warmup_s=env_float("SOAK_WARMUP_SECONDS", d.warmup_s),
                   faults=tuple(env_list("SOAK_FAULTS", list(d.faults))),
                   restart_k=env_int("SOAK_RESTART_CONTAINERS", d.restart_k))

    @property
    def seconds(self) -> float:
        return self.minutes * 60

    def schedule(self) -> list[tuple[float, str]]:
        """(seconds from the start, fault), one per fault_s, cycling through `faults`, none in the quiet end."""
        out, t, i = [], self.fault_s, 0
        while self.faults and t + self.outage_s <= self.seconds - self.quiet_s:
            out.append((t, self.faults[i % len(self.faults)]))
            t, i = t + self.fault_s, i + 1
        return out


@dataclass
class Sample:
    t_s: float
    phase: str  # "up", or the aggregator outage under way
    handed_over: int  # Σ one past the highest seq seen, per incarnation
    stored: int  # distinct lines in json.log files
    acked: int  # distinct lines at the aggregator
    json_gaps: int  # lines missing below json.log's highest seq (lost so far)
    json_dups: int
    recv_dups: int
    recv_records: int
    pss_mb: float
    fds: int
    journal_mb: float
    plugin_pid: int
    plugin_cpu_s: float
    faults: int


@dataclass
class Fault:
    t_s: float
    kind: str
    detail: str = ""
    seconds: float = 0.0  # how long it took (the plugin until dockerd took it back; restarts until started)


@dataclass
class Soak:
    cfg: Config
    dockerd: Dockerd
    plugin: ManagedPlugin
    receiver: ReceiverProcess
    image: str
    names: list[str] = field(default_factory=list)
    ids: dict[str, str] = field(default_factory=dict)
    json_tally: SeqTally = field(default_factory=SeqTally)
    recv_tally: SeqTally = field(default_factory=SeqTally)
    samples: list[Sample] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.readers: dict[str, JsonLogFiles] = {}
        self.records = RecordsFile(str(self.receiver.output), self.recv_tally)
        self.t0 = 0.0
        self.phase = "up"
        self.rng = random.Random(7)
        self.lock = threading.Lock()
        self.later: list[tuple[float, str]] = []  # follow-ups of faults (the aggregator back up)
        self.errors: list[str] = []  # faults that failed

    # ---- setup -----------------------------------------------------------------------------------------
    def start_containers(self) -> None:
        burst_every = 0.5 if self.cfg.rate >= 2 else 1.0
        burst = max(1, round(self.cfg.rate * burst_every))

        def start(i: int) -> tuple[str, str]:
            name = f"soak-{i:02d}"
            opts = {**ROTATION, "fluentd-address": self.receiver.address, "forward-record-id": "true"}
            if i % 3 == 0:
                opts["compress"] = "true"
            args = ["-d", "-e", f"NAME={name}", "-e", f"B={burst}", "-e", f"T={int(burst_every * 1e6)}"]
            res = self.dockerd.run(self.image, "sh", "-c", WRITER, log_driver=self.plugin.driver, log_opts=opts,
                                   name=name, extra_args=args)
            if res.rc != 0:
                raise SupportError(f"{name}: docker run failed: {res.stderr.decode(errors='replace')}")
            return name, res.container_id

        with ThreadPoolExecutor(8) as pool:
            for name, cid in pool.map(start, range(self.cfg.containers)):
                self.names.append(name)
                self.ids[name] = cid
                self.readers[name] = JsonLogFiles(str(self.plugin.json_log(cid)), self.json_tally)

    # ---- faults ----------------------------------------------------------------------------------------
    def restart_some(self) -> Fault:
        chosen = sorted(self.rng.sample(self.names, min(self.cfg.restart_k, len(self.names))))
        t = time.monotonic()
        self.dockerd.docker("restart", "-t", "20", *[self.ids[n] for n in chosen], timeout=120)
        return Fault(0, "restart", " ".join(chosen), time.monotonic() - t)

    def kill_plugin(self) -> Fault:
        # dockerd restarts a managed plugin, then dials it, serially with its next exit event: a second kill
        # before dockerd took it back (rewrote its config.json) would leave it down (tests/e2e/test_crash.py).
        config = self.dockerd.data_root / "plugins" / self.plugin.id / "config.json"
        stamp = _stamp(config)
        t = time.monotonic()
        old = self.plugin.kill()
        new = self.plugin.wait_running(old, timeout=90)
        wait_for("dockerd to take the plugin back", lambda: _stamp(config) != stamp, 60)
        return Fault(0, "plugin_kill", f"pid {old} -> {new}", time.monotonic() - t)

    def run_fault(self, kind: str, now: float) -> None:
        """Start a fault (in a thread); its follow-ups (seconds from the start, action) go to `later`."""
        if kind == "restart":
            fault = self.restart_some()
        elif kind == "plugin_kill":
            fault = self.kill_plugin()
        elif kind == "receiver_stop":
            self.receiver.pause()
            self.phase = "receiver_stopped"
            fault = Fault(0, kind, f"SIGSTOP for {self.cfg.outage_s:g} s", self.cfg.outage_s)
            later = [(now + self.cfg.outage_s, "receiver_resume")]
        elif kind == "receiver_kill":
            self.receiver.kill()
            self.phase = "receiver_down"
            fault = Fault(0, kind, f"SIGKILL, down {self.cfg.outage_s / 2:g} s", self.cfg.outage_s / 2)
            later = [(now + self.cfg.outage_s / 2, "receiver_start")]
        else:
            raise ValueError(f"unknown fault {kind!r} (SOAK_FAULTS)")
        fault.t_s = round(now, 1)
        self.faults.append(fault)
        log(f"fault at {now:.0f} s: {kind} {fault.detail} ({fault.seconds:.1f} s)")
        if kind.startswith("receiver"):
            with self.lock:
                self.later += later

    def follow_up(self, action: str) -> None:
        if action == "receiver_resume":
            self.receiver.resume()
        else:
            self.receiver.start()
        self.phase = "up"

    # ---- sampling --------------------------------------------------------------------------------------
    def scan(self) -> None:
        for reader in self.readers.values():
            reader.scan()
        self.records.scan()

    def handed_over(self) -> int:
        keys = set(self.json_tally.counts) | set(self.recv_tally.counts)
        return sum(max(self.json_tally.seen_prefix(*k), self.recv_tally.seen_prefix(*k)) for k in keys)

    def journal_bytes(self) -> int:
        total = 0
        for seg in (self.plugin.state_dir / "containers").glob("*/journal/*.seg"):
            try:
                total += seg.stat().st_size
            except FileNotFoundError:
                pass
        return total

    def sample(self) -> Sample:
        self.scan()
        pid = self.plugin.pid() or 0
        pids = procstat.tree(pid) if pid else []
        fds = 0
        for p in pids:
            try:
                fds += len(os.listdir(f"/proc/{p}/fd"))
            except OSError:
                pass
        s = Sample(t_s=round(time.monotonic() - self.t0, 1), phase=self.phase, handed_over=self.handed_over(),
                   stored=self.json_tally.distinct, acked=self.recv_tally.distinct,
                   json_gaps=self.json_tally.gaps(), json_dups=self.json_tally.duplicates,
                   recv_dups=self.recv_tally.duplicates, recv_records=self.records.records,
                   pss_mb=round(procstat.pss_bytes(pids) / 1e6, 2), fds=fds,
                   journal_mb=round(self.journal_bytes() / 1e6, 3), plugin_pid=pid,
                   plugin_cpu_s=round(procstat.tree_cpu(pid), 2) if pid else 0.0, faults=len(self.faults))
        self.samples.append(s)
        return s

    # ---- the run ---------------------------------------------------------------------------------------
    def in_background(self, fn, *args) -> threading.Thread:
        """Run a slow docker step (a restart, a plugin kill: a minute or more on a loaded machine) in a thread, so
        that the json.log files keep being read meanwhile: max-file deletes a file ~90 s after it was started."""
        def call() -> None:
            try:
                fn(*args)
            except Exception as exc:  # a failed fault is reported, the soak goes on
                log(f"{getattr(fn, '__name__', fn)} failed: {exc}")
                self.errors.append(f"{getattr(fn, '__name__', fn)}: {exc}")

        thread = threading.Thread(target=call, daemon=True)
        thread.start()
        return thread

    def run(self) -> None:
        self.start_containers()
        self.t0 = time.monotonic()
        todo = [(t, kind) for t, kind in self.cfg.schedule()]
        busy: threading.Thread | None = None  # the fault under way (one at a time)
        next_sample = next_scan = 0.0
        while True:
            now = time.monotonic() - self.t0
            idle = busy is None or not busy.is_alive()
            if now >= self.cfg.seconds and not todo and idle:
                break
            with self.lock:
                todo += self.later
                self.later.clear()
            todo.sort()
            due = [item for item in todo if item[0] <= now]
            follow = next((item for item in due if item[1] in ("receiver_resume", "receiver_start")), None)
            if follow:  # the aggregator comes back on time, even while a slow fault runs
                todo.remove(follow)
                self.follow_up(follow[1])
                continue
            if due and idle:
                todo.remove(due[0])
                busy = self.in_background(self.run_fault, due[0][1], now)
                continue
            if now >= next_sample:
                s = self.sample()
                next_sample = now + self.cfg.sample_s
                if len(self.samples) % 6 == 1:
                    log(f"{s.t_s:6.0f} s  handed over {s.handed_over}  stored {s.stored}  acked {s.acked}  "
                        f"gaps {s.json_gaps}  dups {s.json_dups}/{s.recv_dups}  pss {s.pss_mb} MB  fds {s.fds}  "
                        f"journal {s.journal_mb} MB  [{s.phase}]")
            elif now >= next_scan:
                self.scan()
                next_scan = now + SCAN_SECONDS
            wake = min([next_sample, next_scan, self.cfg.seconds] + [t for t, _ in todo[:1]])
            time.sleep(max(0.0, min(1.0, wake - (time.monotonic() - self.t0))))

    def finish(self, timeout: float = 300) -> dict:
        """Stop the containers (TERM: each writer records its count), let json.log and the aggregator catch up,
        read the writers' counts back. Returns the per-incarnation written counts and how they were found."""
        if self.phase != "up":
            self.follow_up("receiver_resume" if self.phase == "receiver_stopped" else "receiver_start")
        log("stopping the containers")
        stopping = self.in_background(self.dockerd.docker, "stop", "-t", "30", *self.ids.values())
        while stopping.is_alive():
            self.scan()
            stopping.join(SCAN_SECONDS)
        exact = self.written_by_writers()
        # Every incarnation's count is known now (or falls back to the prefix rule): wait until both hold it.
        def caught_up() -> bool:
            self.scan()
            want = self.written(exact)[0]
            return self.json_tally.distinct >= want and self.recv_tally.distinct >= want

        try:
            wait_for("json.log and the aggregator to hold every line written", caught_up, timeout, interval=0.5)
        except SupportError as e:
            log(str(e))
        self.sample()
        return exact

    def written_by_writers(self) -> dict[tuple[str, int], int]:
        """(name, incarnation) → lines written, from each container's /tmp/w.<incarnation> (docker cp)."""
        out: dict[tuple[str, int], int] = {}
        self.incarnations: dict[str, int] = {}
        for name, cid in self.ids.items():
            tar = self.dockerd.docker("cp", f"{cid}:/tmp", "-").stdout
            with tarfile.open(fileobj=io.BytesIO(tar)) as t:
                for member in t.getmembers():
                    base = os.path.basename(member.name)
                    f = t.extractfile(member) if member.isfile() else None
                    if f is None:
                        continue
                    text = f.read().decode().strip()
                    if base == "inc":
                        self.incarnations[name] = int(text)
                    elif base.startswith("w.") and base[2:].isdigit() and text.isdigit():
                        out[(name, int(base[2:]))] = int(text)
        return out

    def written(self, exact: dict[tuple[str, int], int]) -> tuple[int, int, int]:
        """(lines written, incarnations counted by the prefix rule, lines those hold)."""
        total = by_prefix = prefix_lines = 0
        for name in self.names:
            for n in range(1, self.incarnations.get(name, 0) + 1):
                if (name, n) in exact:
                    total += exact[(name, n)]
                else:
                    k = max(self.json_tally.seen_prefix(name, n), self.recv_tally.seen_prefix(name, n))
                    total, by_prefix, prefix_lines = total + k, by_prefix + 1, prefix_lines + k
        return total, by_prefix, prefix_lines


def frame_estimate() -> int:
    """Bytes of one soak line's FIFO frame (what the journal stores per line)."""
    return len(encode_entry(("stdout", time.time_ns(), b"soak-00 9 123456\n", False, False, "", 0)))


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


# ------------------------------------------------------------------------------------------------- verdicts
def pss_slope_mb_per_10min(samples: list[Sample], since_s: float, warmup_s: float) -> float | None:
    """Least-squares slope of PSS over samples from `since_s` on, one intercept per plugin process (a SIGKILL
    starts a fresh one), leaving out each process's first `warmup_s` (imports, restore). MB per 10 minutes."""
    groups: dict[int, list[tuple[float, float]]] = {}
    first_seen: dict[int, float] = {}
    for s in samples:
        if s.plugin_pid:
            first_seen.setdefault(s.plugin_pid, s.t_s)
    for s in samples:
        born = first_seen.get(s.plugin_pid, 0.0)
        warm = born == samples[0].t_s or s.t_s - born >= warmup_s  # the first process was warm before t=0
        if s.plugin_pid and s.t_s >= since_s and warm:
            groups.setdefault(s.plugin_pid, []).append((s.t_s, s.pss_mb))
    num = den = 0.0
    for pts in groups.values():
        if len(pts) < 2:
            continue
        mt = statistics.fmean(t for t, _ in pts)
        my = statistics.fmean(y for _, y in pts)
        num += sum((t - mt) * (y - my) for t, y in pts)
        den += sum((t - mt) ** 2 for t, _ in pts)
    return num / den * 600 if den else None


def fds_around(samples: list[Sample], t_s: float, window_s: float = 60) -> float | None:
    """Median open fds of the samples in [t_s, t_s + window_s) taken with the aggregator up."""
    vals = [s.fds for s in samples if t_s <= s.t_s < t_s + window_s and s.phase == "up" and s.fds]
    return statistics.median(vals) if vals else None


def verdict(soak: Soak, exact: dict, report: dict) -> dict:
    cfg = soak.cfg
    written, by_prefix, prefix_lines = soak.written(exact)
    rows = {r["name"]: r for r in report.get("containers", [])}
    json_dropped = sum(sum(rows.get(n, {}).get("dropped", {}).values()) for n in soak.names)
    fwd_dropped = sum(o.get("dropped", 0) for n in soak.names for o in rows.get(n, {}).get("outputs", [])
                      if o["name"] != status.JSONLOG)
    stored = soak.json_tally.distinct
    lost = written - stored - json_dropped
    acked_missing = written - soak.recv_tally.distinct - fwd_dropped
    frame = len(encode_entry(("stdout", time.time_ns(), b"soak-00 99 %d\n" % (cfg.rate * cfg.seconds), False,
                              False, "", 0)))
    resends = sum(1 for f in soak.faults if f.kind in RESENDING_FAULTS)
    allowed = max(1, resends) * BATCH_BYTES // frame
    worst_dups = max((soak.recv_tally.twice(n), n) for n in soak.names) if soak.names else (0, "")
    last = soak.samples[-1].t_s
    window = cfg.seconds * 2 / 3
    running = [s for s in soak.samples if s.t_s <= cfg.seconds]  # not the drain, after the containers stopped
    slope = pss_slope_mb_per_10min(running, cfg.seconds - window, cfg.warmup_s)
    t_ref = cfg.seconds / 3
    fds_ref = fds_around(soak.samples, t_ref)
    ended = [s for s in soak.samples if s.t_s <= cfg.seconds and s.phase == "up"]
    fds_end = fds_around(soak.samples, (ended[-1].t_s if ended else last) - 60 + 1e-6, 60)
    checks = [
        ("lost (written − stored − counted drops) is 0", lost == 0, f"{lost}"),
        ("no json.log holds a line twice", soak.json_tally.duplicates == 0, f"{soak.json_tally.duplicates}"),
        ("the aggregator holds every line (− counted drops)", acked_missing == 0, f"{acked_missing} missing"),
        (f"aggregator duplicates per container ≤ one batch per resending fault ({resends} × {BATCH_BYTES} B "
         f"= {allowed} lines)", worst_dups[0] <= allowed, f"worst {worst_dups[1]}: {worst_dups[0]}"),
        (f"PSS slope over the last {window / 60:.3g} min ≤ 1 MB / 10 min",
         slope is not None and slope <= 1.0, "n/a" if slope is None else f"{slope:.3f} MB / 10 min"),
        (f"fds at the end ≤ fds at minute {t_ref / 60:.3g}", fds_ref is not None and fds_end is not None
         and fds_end <= fds_ref, f"{fds_end} vs {fds_ref}"),
    ]
    return {
        "written": written, "incarnations": sum(soak.incarnations.values()),
        "incarnations_by_prefix_rule": by_prefix, "lines_by_prefix_rule": prefix_lines,
        "stored": stored, "json_dropped": json_dropped, "lost": lost, "json_duplicates": soak.json_tally.duplicates,
        "json_foreign": soak.json_tally.foreign, "acked": soak.recv_tally.distinct, "forward_dropped": fwd_dropped,
        "acked_missing": acked_missing, "aggregator_records": soak.records.records,
        "aggregator_duplicates": soak.recv_tally.duplicates, "aggregator_foreign": soak.recv_tally.foreign,
        "frame_bytes": frame, "resending_faults": resends, "duplicates_allowed_per_container": allowed,
        "worst_container_duplicates": worst_dups[0], "worst_container": worst_dups[1],
        "truncations_seen": sum(r.truncations for r in soak.readers.values()),
        "rewrites_seen": sum(r.rewrites for r in soak.readers.values()),
        "pss_slope_mb_per_10min": None if slope is None else round(slope, 4), "fds_ref": fds_ref,
        "fds_end": fds_end, "checks": [{"check": c, "ok": ok, "value": v} for c, ok, v in checks],
        "ok": all(ok for _, ok, _ in checks),
    }


# ------------------------------------------------------------------------------------------------- output
def write_csv(path: Path, samples: list[Sample]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(asdict(samples[0])))
        w.writeheader()
        for s in samples:
            w.writerow(asdict(s))


FAULT_COLOURS = {"restart": "tab:green", "plugin_kill": "tab:red", "receiver_stop": "tab:orange",
                 "receiver_kill": "tab:purple"}


def write_plot(path: Path, samples: list[Sample], faults: list[Fault], v: dict) -> str | None:
    try:
        import matplotlib
    except ImportError:
        return "no plot: matplotlib is not installed (pip install -e '.[bench]')"
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s.t_s / 60 for s in samples]
    fig, ax = plt.subplots(4, 1, figsize=(11, 12), sharex=True)
    ax[0].plot(t, [s.handed_over / 1e6 for s in samples], label="handed over")
    ax[0].plot(t, [s.stored / 1e6 for s in samples], label="stored (json.log)", linestyle="--")
    ax[0].plot(t, [s.acked / 1e6 for s in samples], label="acked (aggregator)", linestyle=":")
    ax[0].set_ylabel("lines (M)")
    ax[1].plot(t, [s.handed_over - s.stored for s in samples], label="json.log behind")
    ax[1].plot(t, [s.handed_over - s.acked for s in samples], label="aggregator behind")
    ax[1].plot(t, [s.json_gaps for s in samples], label="json.log gaps (lost)")
    ax[1].plot(t, [s.recv_dups for s in samples], label="aggregator duplicates")
    ax[1].plot(t, [s.json_dups for s in samples], label="json.log duplicates")
    ax[1].set_ylabel("lines")
    ax[1].set_yscale("symlog")
    ax[2].plot(t, [s.pss_mb for s in samples], label="plugin PSS")
    ax[2].set_ylabel("MB")
    ax[3].plot(t, [s.fds for s in samples], label="plugin open fds")
    ax[3].set_ylabel("fds")
    j = ax[3].twinx()
    j.plot(t, [s.journal_mb for s in samples], color="tab:brown", label="journal on disk (MB)")
    j.set_ylabel("journal MB")
    ax[3].set_xlabel("minutes")
    for a in ax:
        for f in faults:
            a.axvline(f.t_s / 60, color=FAULT_COLOURS.get(f.kind, "grey"), alpha=0.35, linewidth=1)
        a.legend(loc="upper left", fontsize=8)
        a.grid(alpha=0.3)
    j.legend(loc="lower right", fontsize=8)
    kinds = ", ".join(f"{k} ({c.split(':')[1]})" for k, c in FAULT_COLOURS.items())
    fig.suptitle(f"make soak: {'PASS' if v['ok'] else 'FAIL'}; faults: {kinds}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return None


def markdown(meta: dict, cfg: Config, v: dict, faults: list[Fault], samples: list[Sample]) -> str:
    kinds: dict[str, list[Fault]] = {}
    for f in faults:
        kinds.setdefault(f.kind, []).append(f)
    first, last = samples[0], samples[-1]
    lines = [
        f"# make soak: {'PASS' if v['ok'] else '**FAIL**'}", "",
        f"{meta['started']}, {meta['machine']['nproc']} CPUs ({meta['machine']['cpu_model']}), kernel "
        f"{meta['machine']['kernel']}; dockerd {meta['dockerd_version']}; logbridge {meta['git']}. Load average "
        f"before/after: {meta['loadavg_start']} / {meta['loadavg_end']} (the machine was shared).", "",
        f"{cfg.minutes:g} minutes, {cfg.containers} containers writing {cfg.rate} lines/s each to logbridge (managed "
        f"plugin), json.log `max-size={ROTATION['max-size']} max-file={ROTATION['max-file']}` (compress=true on every "
        f"third container), forward with acks and record ids to driver.receiver. One fault every {cfg.fault_s:g} s "
        f"(cycle: {', '.join(cfg.faults)}), none in the last {cfg.quiet_s:g} s; samples every {cfg.sample_s:g} s "
        "(`soak.csv`, `soak.png`).", "",
        "## Checks", "", "| check | value | ok |", "|---|---|---|",
        *[f"| {c['check']} | {c['value']} | {'yes' if c['ok'] else '**no**'} |" for c in v["checks"]], "",
        "## Lines", "", "| figure | value |", "|---|---|",
        f"| written (the writers' own counts) | {v['written']:,} in {v['incarnations']} container incarnations |",
        f"| of which counted by the gap-free prefix rule | {v['lines_by_prefix_rule']:,} lines in "
        f"{v['incarnations_by_prefix_rule']} incarnations with no count of their own |",
        f"| stored (distinct lines in json.log files) | {v['stored']:,} |",
        f"| dropped as counted by logbridge (json.log) | {v['json_dropped']:,} |",
        f"| lost | {v['lost']:,} |",
        f"| json.log duplicates / foreign lines | {v['json_duplicates']} / {v['json_foreign']} |",
        f"| acked (distinct at the aggregator) | {v['acked']:,} (forward drops counted: {v['forward_dropped']}) |",
        f"| aggregator records / duplicates | {v['aggregator_records']:,} / {v['aggregator_duplicates']:,} "
        f"(worst container {v['worst_container']}: {v['worst_container_duplicates']}, allowed "
        f"{v['duplicates_allowed_per_container']}) |",
        f"| json.log truncations by crash recovery seen by the reader | {v['truncations_seen']} (rewrites "
        f"with other bytes: {v['rewrites_seen']}) |", "",
        "## Resources", "", "| figure | start | end |", "|---|---|---|",
        f"| plugin PSS MB | {first.pss_mb} | {last.pss_mb} |",
        f"| plugin open fds | {first.fds} | {last.fds} |",
        f"| journal MB on disk | {first.journal_mb} | {last.journal_mb} |", "",
        f"PSS slope (least squares, one intercept per plugin process, each process's first {cfg.warmup_s:g} s "
        f"left out): {v['pss_slope_mb_per_10min']} MB / 10 min. fds (median of a minute, aggregator up): "
        f"{v['fds_ref']} at minute {cfg.minutes / 3:.3g}, {v['fds_end']} at the end. Journal bytes only fall "
        "when a container's segment (8 MiB with the default cap) is full, or the container stops, and every "
        "consumer has passed it; at "
        f"{cfg.rate} lines/s a segment fills in about {8 * 2**20 / (cfg.rate * frame_estimate()) / 3600:.1f} h, so "
        "over a soak they grow by the frames written, bounded by the journal cap.", "",
        "## Faults", "", "| fault | count | took (s, median) |", "|---|---|---|",
        *[f"| {k} | {len(fs)} | {statistics.median(f.seconds for f in fs):.1f} |" for k, fs in kinds.items()], "",
        *([f"Faults that failed: {'; '.join(meta['errors'])}", ""] if meta.get("errors") else []),
        "Written: each container incarnation's writer traps TERM (docker stop and docker restart send it), finishes "
        "its burst and saves how many lines it wrote in the container's /tmp, read back with docker cp at the end. An "
        "incarnation without that count (SIGKILLed after the grace period) counts what dockerd handed over by the "
        "gap-free prefix rule: one past its highest seq that reached json.log or the aggregator.", "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- main
def render(out: Path) -> int:
    """Write the plot and the summary again from a run's .csv and .json (after a change to the reporting)."""
    meta = json.loads(out.with_suffix(".json").read_text())
    cfg = Config(**{**meta["config"], "faults": tuple(meta["config"]["faults"])})
    with open(out.with_suffix(".csv"), newline="") as f:
        kinds = {f.name: f.type for f in fields(Sample)}  # "int", "float", "str" (annotations are strings here)
        cast = {"int": lambda v: int(float(v)), "float": float, "str": str}
        samples = [Sample(**{k: cast[kinds[k]](v) for k, v in row.items()}) for row in csv.DictReader(f)]
    faults = [Fault(**f) for f in meta["faults"]]
    note = write_plot(out.with_suffix(".png"), samples, faults, meta["verdict"])
    md = markdown(meta, cfg, meta["verdict"], faults, samples) + (f"\n{note}\n" if note else "")
    out.with_suffix(".md").write_text(md)
    print(md)
    return 0


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--render":
        return render(Path(sys.argv[2]))
    if os.geteuid() != 0:
        print("make soak needs root (it runs a private dockerd)", file=sys.stderr)
        return 1
    cfg = Config.from_env()
    out = Path(os.environ.get("SOAK_OUT", str(REPO / "bench" / "results" / "soak")))
    out.parent.mkdir(parents=True, exist_ok=True)
    state = os.environ.get("SOAK_STATE") or tempfile.mkdtemp(prefix="lbs.", dir="/tmp")
    dockerd = Dockerd(state)
    plugin = receiver = None
    meta: dict = {"started": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": procstat.machine(),
                  "git": git_describe(), "loadavg_start": procstat.loadavg(), "config": asdict(cfg)}
    try:
        log(f"dockerd in {state}")
        dockerd.start()
        image = import_busybox(dockerd)
        meta["dockerd_version"] = dockerd.docker("version", "-f", "{{.Server.Version}}").stdout.decode().strip()
        plugin_dir = Path(os.environ.get("SOAK_PLUGIN_DIR") or build_plugin_dir(Path(state) / "plugin-dir"))
        plugin = create_managed_plugin(dockerd, plugin_dir, f"lbsoak-{secrets.token_hex(3)}",
                                       log_root=Path(state) / "plugin-logs", state_dir=Path(state) / "plugin-state")
        receiver = ReceiverProcess(Path(state) / "receiver").start()
        soak = Soak(cfg, dockerd, plugin, receiver, image)
        log(f"{cfg.containers} containers, {cfg.minutes:g} min, faults at {[t for t, _ in cfg.schedule()]}")
        soak.run()
        exact = soak.finish()
        report = status.fetch(status.socket_path(str(plugin.state_dir)))
        meta["loadavg_end"] = procstat.loadavg()
        v = verdict(soak, exact, report)
        meta["verdict"] = v
        meta["faults"] = [asdict(f) for f in soak.faults]
        meta["errors"] = soak.errors
        write_csv(out.with_suffix(".csv"), soak.samples)
        note = write_plot(out.with_suffix(".png"), soak.samples, soak.faults, v)
        md = markdown(meta, cfg, v, soak.faults, soak.samples) + (f"\n{note}\n" if note else "")
        out.with_suffix(".md").write_text(md)
        out.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
        print(md)
        log(f"wrote {out}.csv, .png, .md, .json")
        return 0 if v["ok"] else 1
    finally:
        if receiver:
            receiver.stop()
        try:
            if plugin:
                plugin.remove()
        finally:
            if not os.environ.get("SOAK_STATE"):
                dockerd.stop(purge=True)
            else:
                dockerd.stop()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally: no dockerd left behind
    sys.exit(main())
