"""`make fuzz`: every target in fuzz/targets/ under atheris (libFuzzer), one after another, with the C extensions
built with ASan/UBSan (fuzz/build.py) and atheris's ``asan_with_fuzzer.so`` preloaded; then a table of
executions, coverage and findings per target.

    python -m fuzz.run [TARGET ...]      FUZZ_SECONDS (default 1200) and FUZZ_RUNS (default 1000000) per target:
                                         each stops at whichever comes first, as issue 11.2's budget says
    python -m fuzz.run --smoke           a few seconds per target from the seeds, fixed random seed, nothing kept
                                         (tests/process/test_fuzz_smoke.py runs this)
    python -m fuzz.run --merge           fold the run's corpus into fuzz/corpus/ (libFuzzer -merge=1: only
                                         inputs that add coverage)

Each target's libFuzzer log goes to fuzz/build/logs/<target>.log, a crashing input to fuzz/build/findings/. A
finding exits non-zero. Inside the child (``--child``) the target's and driver's Python is instrumented for
coverage, and the extensions loaded are checked to be the sanitized ones.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "fuzz" / "build"
CORPUS = REPO / "fuzz" / "corpus"
SMOKE_SECONDS = 4
SMOKE_RUNS = 3000
ASAN_OPTIONS = "detect_leaks=0:abort_on_error=0:allocator_may_return_null=1:handle_abort=1"
UBSAN_OPTIONS = "halt_on_error=1:print_stacktrace=1"


class ToolchainMissing(RuntimeError):
    """atheris or clang is not installed: the fuzz targets cannot run here."""


def asan_runtime() -> Path:
    try:
        import atheris
    except ImportError:
        raise ToolchainMissing("atheris is not installed in this venv (make fuzz installs it)") from None
    path = Path(atheris.path()) / "asan_with_fuzzer.so"
    if not path.exists():
        raise ToolchainMissing(f"{path} is missing: this atheris has no ASan runtime")
    return path


@dataclass
class Result:
    target: str
    rc: int
    executions: int = 0
    exec_per_sec: int = 0
    coverage: int = 0  # libFuzzer's "cov": edges/counters hit, Python and C together
    features: int = 0
    corpus: int = 0
    seconds: float = 0.0
    finding: str = ""


_STAT = re.compile(r"^stat::(\w+):\s+(\d+)", re.M)
_PROGRESS = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)", re.M)
_FINDING = re.compile(r"^(==\d+==ERROR: .*|.*runtime error: .*|=== Uncaught Python exception: ===\n.*|"
                      r"Finding: .*|.*Error: .*)$", re.M)


def parse(target: str, rc: int, log: str, seconds: float) -> Result:
    stats = {k: int(v) for k, v in _STAT.findall(log)}
    result = Result(target, rc, stats.get("number_of_executed_units", 0), stats.get("average_exec_per_sec", 0),
                    seconds=seconds)
    progress = _PROGRESS.findall(log)
    if progress:
        _, result.coverage, result.features, result.corpus = (int(x) for x in progress[-1])
    if rc != 0:
        found = _FINDING.findall(log)
        result.finding = (found[0] if found else f"exit code {rc}").replace("\n", " ")[:160]
    return result


def run_target(target: str, seconds: int, runs: int, merge: bool = False, smoke: bool = False) -> Result:
    from fuzz.targets import TARGETS

    if target not in TARGETS:
        raise SystemExit(f"no fuzz target {target!r} (targets: {', '.join(TARGETS)})")
    if smoke:  # from the seeds alone, with a fixed seed: the same inputs every time, nothing kept
        with tempfile.TemporaryDirectory(prefix=f"fuzz-smoke-{target}-") as work:
            return _run(target, CORPUS / target, Path(work), [f"-runs={runs}", f"-max_total_time={seconds}",
                                                               "-seed=1", "-print_final_stats=1"], "-smoke")
    if merge:  # libFuzzer -merge=1 adds to the first folder the inputs of the others that add coverage
        return _run(target, CORPUS / target, BUILD / "corpus" / target, ["-merge=1"], "-merge", merge=True)
    return _run(target, CORPUS / target, BUILD / "corpus" / target,
                [f"-runs={runs}", f"-max_total_time={seconds}", "-print_final_stats=1"], "")


def _run(target: str, seeds: Path, work: Path, flags: list[str], log_suffix: str, merge: bool = False) -> Result:
    for folder in (seeds, work, BUILD / "findings", BUILD / "logs"):
        folder.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, LD_PRELOAD=str(asan_runtime()), ASAN_OPTIONS=ASAN_OPTIONS, UBSAN_OPTIONS=UBSAN_OPTIONS,
               PYTHONPATH=str(REPO))
    env.pop("LOGBRIDGE_PURE", None)  # the C code is what is being fuzzed
    # libFuzzer writes what it finds into the first folder: the run's own, not the repo's seeds.
    folders = [str(seeds), str(work)] if merge else [str(work), str(seeds)]
    cmd = [sys.executable, "-m", "fuzz.run", "--child", target, *folders, *flags, "-timeout=20",
           "-rss_limit_mb=3072", f"-artifact_prefix={BUILD / 'findings'}/{target}-"]
    log_path = BUILD / "logs" / f"{target}{log_suffix}.log"
    started = time.monotonic()
    with log_path.open("wb") as log:  # written as it goes: `tail -f` shows a long run's progress
        proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    return parse(target, proc.returncode, log_path.read_text(errors="replace"), time.monotonic() - started)


def child(target: str, libfuzzer_args: list[str]) -> None:
    """Inside the sanitized process: load the ASan builds, instrument the Python, hand over to libFuzzer."""
    import importlib

    import atheris

    from fuzz.harness import load_sanitized
    from fuzz.targets import PYTHON_COVERAGE

    load_sanitized()
    with atheris.instrument_imports(include=[f"fuzz.targets.{target}", "fuzz.inputs", *PYTHON_COVERAGE[target]]):
        module = importlib.import_module(f"fuzz.targets.{target}")
    if not any(a.startswith("-max_len=") for a in libfuzzer_args):
        libfuzzer_args.append(f"-max_len={module.MAX_LEN}")
    # argv[0] is how libFuzzer starts itself again (-merge=1 runs it through sh): this very command.
    atheris.Setup([f"{sys.executable} -m fuzz.run --child {target}", *libfuzzer_args], module.fuzz_one)
    atheris.Fuzz()


def table(results: list[Result]) -> str:
    rows = [f"{'target':<16} {'executions':>11} {'exec/s':>7} {'cov':>6} {'ft':>7} {'corpus':>6} {'time':>7}  finding"]
    for r in results:
        rows.append(f"{r.target:<16} {r.executions:>11,} {r.exec_per_sec:>7,} {r.coverage:>6} {r.features:>7} "
                    f"{r.corpus:>6} {r.seconds:>6.0f}s  {r.finding or 'none'}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child(argv[1], argv[2:])
        return 0
    parser = argparse.ArgumentParser(prog="python -m fuzz.run")
    parser.add_argument("targets", nargs="*")
    parser.add_argument("--smoke", action="store_true", help=f"{SMOKE_SECONDS} s per target")
    parser.add_argument("--merge", action="store_true", help="fold fuzz/build/corpus into fuzz/corpus")
    args = parser.parse_args(argv)
    from fuzz.build import build
    from fuzz.targets import TARGETS

    try:
        asan_runtime()
    except ToolchainMissing as exc:
        print(f"fuzz: {exc}", file=sys.stderr)
        return 2
    build()
    seconds = SMOKE_SECONDS if args.smoke else int(os.environ.get("FUZZ_SECONDS", "1200"))
    runs = SMOKE_RUNS if args.smoke else int(os.environ.get("FUZZ_RUNS", "1000000"))
    results = []
    for target in args.targets or TARGETS:
        result = run_target(target, seconds, runs, merge=args.merge, smoke=args.smoke)
        results.append(result)
        print(table([result]).splitlines()[-1], flush=True)
    print(table(results))
    return 1 if any(r.rc != 0 for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
