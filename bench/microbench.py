"""`make microbench`: the plugin's data path without dockerd, stage by stage, in µs per line.

Generated frames (as dockerd writes them into the FIFO) are put into a real Journal in a temp dir; then, in 1 MiB
batches as the consumers take them:

  journal.read        Journal.read(pos, 1 MiB)
  decode              frames.FrameDecoder.decode
  jsonfile.encode     jsonfile.encode_entries (with an attrs object, as with --log-opt labels/env/tag)
  logfile.write       logfile.LogFile.write_lines into a json.log (max-size large: no rotation)
  forward.records     forward.codec.RecordEncoder.encode_batch (EventTime, Docker's fluentd-driver layout)
  forward.frames      forward.codec.BatchBuilder.extend + flush (PackedForward frames with chunk ids)
  direct.read         Journal.read again, for the json.log writer's C way
  direct.encode       jsonfile.encode_frames: json-file lines joined, in C straight from the frames (no decode)
  direct.write        logfile.LogFile.write_lines of the joined lines

"json.log path" = read + decode + encode + write (what the json.log consumer does per batch), "forward path" =
read + decode + records + frames (what the forward sink prepares per batch), "json.log direct" = direct.read +
direct.encode + direct.write (what the json.log writer does per batch with the C extension). Each stage is
timed over the whole run; the best of --repeat runs is reported. --profile cprofile|pyinstrument runs both paths
once more under that profiler and prints the top of the profile.

  python -m bench.microbench [--workload short|100b|40kb|mixed] [--lines N] [--repeat 3] [--profile cprofile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator

from driver.frames import FrameDecoder, encode_entry
from driver.journal import Journal
from driver.jsonfile import encode_attrs, encode_entries, encode_frames
from driver.logfile import LogFile
from driver.outputs.forward.codec import BatchBuilder, RecordEncoder
from driver.sinks.jsonlog import BATCH_BYTES

CID = "3f1c5e0b2a9d" * 5 + "abcd"
STAGES = ["journal.read", "decode", "jsonfile.encode", "logfile.write", "forward.records", "forward.frames",
          "direct.read", "direct.encode", "direct.write"]


def entries_for(workload: str, n: int) -> list[tuple]:
    """Decoded entries as dockerd produces them for a workload: ~1 µs apart, stdout."""
    t = 1_764_165_000_000_000_000
    out = []
    if workload == "short":
        for i in range(1, n + 1):
            out.append(("stdout", t + i * 1013, str(i).encode(), False, False, "", 0))
    elif workload == "100b":
        line = b"x" * 99
        for i in range(n):
            out.append(("stdout", t + i * 1013, line, False, False, "", 0))
    elif workload == "40kb":
        line = b"x" * 40_000
        for i in range(n):
            pid = f"{i:064x}"
            for k, start in enumerate(range(0, len(line), 16384), 1):
                chunk = line[start : start + 16384]
                last = start + 16384 >= len(line)
                out.append(("stdout", t + i * 1013, chunk, True, last, pid, k))
    elif workload == "mixed":  # log-like text, some needing escapes, some UTF-8, both streams
        samples = [
            b'2026-11-26 10:00:00 INFO request handled path=/api/v1/items status=200 took=3ms',
            b'{"level":"warn","msg":"slow query","ms":812,"sql":"select * from t where a<b & c>d"}',
            b"\tat com.example.Service.handle(Service.java:42)",
            "caf\u00e9 na\u00efve \u2713 done".encode(),
        ]
        for i in range(n):
            out.append(("stderr" if i % 7 == 0 else "stdout", t + i * 1013, samples[i % len(samples)], False,
                        False, "", 0))
    else:
        raise SystemExit(f"unknown workload {workload!r}")
    return out


class Timer:
    def __init__(self) -> None:
        self.total = dict.fromkeys(STAGES, 0.0)

    def __call__(self, stage: str, fn: Callable, *args):
        t = time.perf_counter()
        result = fn(*args)
        self.total[stage] += time.perf_counter() - t
        return result


def batches(journal: Journal, timer: Timer) -> Iterator[list[tuple]]:
    """Decoded batches of the whole journal, as a consumer takes them (its batch size, its decoder)."""
    decoder = FrameDecoder()
    pos = journal.start
    while data := timer("journal.read", journal.read, pos, BATCH_BYTES):
        entries, used = timer("decode", decoder.decode, data, pos + len(data) >= journal.end)
        if not used:
            return
        pos += used
        yield entries


def replay(journal: Journal, tmp: str, attrs_json: bytes, timer: Timer) -> tuple[int, int, int]:
    """Both consumers' batch loops over the whole journal. Returns (entries, json.log bytes, forward bytes)."""
    # json.log consumer
    logfile = LogFile(os.path.join(tmp, f"{CID}-json.log"), 1 << 40, 1, False)
    n_entries = 0
    for entries in batches(journal, timer):
        n_entries += len(entries)
        lines = timer("jsonfile.encode", encode_entries, entries, attrs_json)
        timer("logfile.write", logfile.write_lines, lines)
    json_bytes = logfile.size
    logfile.close()
    os.unlink(logfile.path)
    # json.log consumer, the C way: frames straight to joined lines (the writer's ordinary batches)
    if encode_frames(b"", None) is not None:
        logfile = LogFile(os.path.join(tmp, f"{CID}-json.log"), 1 << 40, 1, False)
        pos = journal.start
        while data := timer("direct.read", journal.read, pos, BATCH_BYTES):
            used, _, _, joined, _ = timer("direct.encode", encode_frames, data, attrs_json)
            if not used:
                break
            timer("direct.write", logfile.write_lines, joined)
            pos += used
        if logfile.size != json_bytes:
            raise AssertionError(f"the C way wrote {logfile.size} bytes of json.log, the decoded way {json_bytes}")
        logfile.close()
        os.unlink(logfile.path)
    # forward sink
    encoder = RecordEncoder({"container_id": CID, "container_name": "/bench"}, time_format="event_time")
    fwd_bytes = 0
    for entries in batches(journal, timer):
        records = timer("forward.records", encoder.encode_batch, entries)

        def frames(records=records):
            builder = BatchBuilder(CID[:12])
            out = builder.extend(records)
            last = builder.flush()
            if last is not None:
                out.append(last)
            return out

        fwd_bytes += sum(len(f.data) for f in timer("forward.frames", frames))
    return n_entries, json_bytes, fwd_bytes


def build_journal(tmp: str, entries: list[tuple]) -> Journal:
    journal = Journal(os.path.join(tmp, "journal"), max_bytes=1 << 40)
    blob = b"".join(encode_entry(e) for e in entries)
    journal.write(blob)
    return journal


def profile(kind: str, fn: Callable[[], object], top: int) -> str:
    if kind == "pyinstrument":
        try:
            from pyinstrument import Profiler
        except ImportError:
            raise SystemExit("pyinstrument is missing: make microbench PROFILE=pyinstrument installs it") from None
        profiler = Profiler(interval=0.0005)
        profiler.start()
        fn()
        profiler.stop()
        return profiler.output_text(unicode=True, color=False, show_all=False)
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf).strip_dirs()
    stats.sort_stats("tottime").print_stats(top)
    buf.write("\n---- by cumulative time ----\n")
    stats.sort_stats("cumulative").print_stats(top)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.microbench", description=__doc__.split("\n")[0])
    p.add_argument("--workload", default=os.environ.get("MICROBENCH_WORKLOAD", "short"),
                   help="short, 100b, 40kb, mixed or a comma list (default short; env MICROBENCH_WORKLOAD)")
    p.add_argument("--lines", type=int, default=None, help="lines per workload (default 1,000,000; 40kb: 1,000)")
    p.add_argument("--repeat", type=int, default=3, help="runs per workload; the best is reported")
    p.add_argument("--profile", choices=["cprofile", "pyinstrument"], default=None)
    p.add_argument("--top", type=int, default=25, help="rows of the profile to print")
    p.add_argument("--json", help="also write the figures to this file")
    p.add_argument("--protobuf", choices=["upb", "python"], default=None,
                   help="force protobuf's backend (python: what a rootfs without libstdc++ falls back to)")
    args = p.parse_args(argv)
    env_key = "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"
    if args.protobuf and os.environ.get(env_key) != args.protobuf:
        # protobuf picks its backend at import time: start again with the variable set
        argv = sys.argv[1:] if argv is None else argv
        os.execve(sys.executable, [sys.executable, "-m", "bench.microbench", *argv],
                  dict(os.environ, **{env_key: args.protobuf}))
    from google.protobuf.internal import api_implementation

    print(f"protobuf backend: {api_implementation.Type()}")
    attrs_json = encode_attrs({"tag": "bench", "com.example.team": "logs"})
    results = {}
    for workload in [w.strip() for w in args.workload.split(",") if w.strip()]:
        n = args.lines or (1000 if workload == "40kb" else 1_000_000)
        tmp = tempfile.mkdtemp(prefix="lbmicro.")
        try:
            entries = entries_for(workload, n)
            journal = build_journal(tmp, entries)
            frames_bytes = journal.end
            del entries
            best: dict[str, float] | None = None
            for _ in range(args.repeat):
                timer = Timer()
                n_entries, json_bytes, fwd_bytes = replay(journal, tmp, attrs_json, timer)
                if best is None or sum(timer.total.values()) < sum(best.values()):
                    best = dict(timer.total)
            read = best["journal.read"] / 2  # both consumers read the journal
            dec = best["decode"] / 2
            figures = {
                "journal.read": read, "decode": dec,
                "jsonfile.encode": best["jsonfile.encode"], "logfile.write": best["logfile.write"],
                "forward.records": best["forward.records"], "forward.frames": best["forward.frames"],
            }
            for k in ("direct.read", "direct.encode", "direct.write"):
                figures[k] = best.get(k, 0.0)
            figures["json.log path"] = read + dec + best["jsonfile.encode"] + best["logfile.write"]
            figures["json.log direct"] = figures["direct.read"] + figures["direct.encode"] + figures["direct.write"]
            figures["forward path"] = read + dec + best["forward.records"] + best["forward.frames"]
            figures["both consumers"] = figures["json.log path"] + figures["forward path"]
            per_line = {k: round(v / n * 1e6, 3) for k, v in figures.items()}
            results[workload] = {"lines": n, "entries": n_entries, "frame_bytes": frames_bytes,
                                 "json_bytes": json_bytes, "forward_bytes": fwd_bytes, "us_per_line": per_line}
            print(f"\n{workload}: {n:,} lines, {n_entries:,} entries, {frames_bytes / 1e6:.1f} MB of frames, "
                  f"json.log {json_bytes / 1e6:.1f} MB, forward {fwd_bytes / 1e6:.1f} MB (best of {args.repeat})")
            print(f"  {'stage':18} {'µs/line':>9} {'s per 1M lines':>15}")
            for k, v in per_line.items():
                if k == "json.log path":
                    print("  " + "-" * 44)
                print(f"  {k:18} {v:9.3f} {v:15.3f}")
            if args.profile:
                print(f"\n---- {args.profile}: both paths over {workload} ----")
                print(profile(args.profile, lambda j=journal, d=tmp: replay(j, d, attrs_json, Timer()), args.top))
            journal.close()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
