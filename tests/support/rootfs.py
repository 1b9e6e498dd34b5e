"""The managed plugin's directory (config.json + rootfs/), built by plugin/build-rootfs.sh (cached)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from .procs import REPO, SupportError

BUILD_SCRIPT = REPO / "plugin" / "build-rootfs.sh"
CONFIG = REPO / "config.json"


def build_plugin_dir(out: Path | str, python: str | None = None) -> Path:
    """Fill `out` with config.json and rootfs/ (a warm cache only unpacks a tar). Returns `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHON=python or sys.executable)
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT), str(out)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    if proc.returncode != 0:
        raise SupportError(
            f"{BUILD_SCRIPT} {out} failed (exit {proc.returncode}):\n{proc.stdout.decode(errors='replace')[-4000:]}"
        )
    shutil.copyfile(CONFIG, out / "config.json")
    return out
