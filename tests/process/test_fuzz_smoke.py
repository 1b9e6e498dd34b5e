"""`make fuzz-smoke`: every fuzz target for a few seconds from its seed corpus, C under ASan/UBSan (fuzz/run.py).

It runs ``python -m fuzz.run --smoke``, what the make target runs, without the make target's deps/venv steps. A
fixed libFuzzer seed: the same inputs every run. Skipped, saying why, where the toolchain is missing (atheris
comes with the test extra, clang-14 and its sanitizer runtimes with scripts/install-deps.sh)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from fuzz.build import clang

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("atheris") is None,
                       reason="atheris is not installed (pip install -e '.[test]' brings it)"),
    pytest.mark.skipif(clang() is None, reason="clang not found (scripts/install-deps.sh installs clang-14)"),
]


def test_every_fuzz_target_runs_clean_under_the_sanitizers():
    proc = subprocess.run([sys.executable, "-m", "fuzz.run", "--smoke"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, f"fuzz findings (logs in fuzz/build/logs/):\n{proc.stdout}\n{proc.stderr[-3000:]}"
    from fuzz.targets import TARGETS

    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines()[-len(TARGETS):]}
    assert sorted(rows) == sorted(TARGETS)
    for target, row in rows.items():
        executions, coverage = int(row[1].replace(",", "")), int(row[3])
        # libFuzzer runs every seed before it looks at the clock: on a loaded machine that may be all it does
        assert executions > 0 and coverage > 0, f"{target} did not run: {row}"
