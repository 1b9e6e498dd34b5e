"""Builds the C extensions with ASan, UBSan and libFuzzer's coverage counters into fuzz/build/ (never the in-place
.so files the tests load): ``python -m fuzz.build``.

The sources are the ones setup.py builds; only the compiler flags differ. clang is needed for
``-fsanitize=fuzzer-no-link`` (scripts/install-deps.sh installs clang-14 and its runtimes). UBSan traps every
finding (``-fno-sanitize-recover``) so that libFuzzer reports it as a crash with the input saved.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "fuzz" / "build"
# module name -> source, as in setup.py
EXTENSIONS = {
    "driver._speedups": "driver/_speedups.c",
    "driver.outputs.forward._entries": "driver/outputs/forward/_entries.c",
    "driver.outputs.loki._encode": "driver/outputs/loki/_encode.c",
    "driver.outputs.elasticsearch._encode": "driver/outputs/elasticsearch/_encode.c",
}
SANITIZE = ["-fsanitize=address,undefined,fuzzer-no-link", "-fno-sanitize-recover=undefined",
            "-fno-omit-frame-pointer"]
CFLAGS = ["-O1", "-g", "-shared", "-fPIC", "-Wall", *SANITIZE]


def clang() -> str | None:
    """The clang that libFuzzer's runtime comes with (a plain `clang` first, then Debian 12's versioned one)."""
    for name in (os.environ.get("CLANG", ""), "clang", "clang-14"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def output_path(module: str) -> Path:
    """Where the sanitized build of ``module`` goes (flat: fuzz/harness.py loads each by path)."""
    return BUILD / f"{module}.so"


def build(force: bool = False) -> dict[str, Path]:
    cc = clang()
    if cc is None:
        raise SystemExit("fuzz/build.py: clang not found (make deps installs clang-14)")
    include = sysconfig.get_paths()["include"]
    BUILD.mkdir(parents=True, exist_ok=True)
    built = {}
    for module, source in EXTENSIONS.items():
        src, out = REPO / source, output_path(module)
        if force or not out.exists() or out.stat().st_mtime < src.stat().st_mtime:
            cmd = [cc, *CFLAGS, f"-I{include}", str(src), "-o", str(out)]
            subprocess.run(cmd, check=True)
            print(f"built {out.relative_to(REPO)} ({' '.join(SANITIZE[:1])})", file=sys.stderr)
        built[module] = out
    return built


if __name__ == "__main__":
    build(force="--force" in sys.argv)
