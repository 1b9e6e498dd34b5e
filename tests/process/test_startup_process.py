"""A plugin that cannot start says why in one JSON line on stderr, exits 1, and leaves no socket for dockerd to
keep dialing (a dead socket makes `docker run` retry for 30 s before it fails)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.plugin_harness import ROOT


def _run(tmp_path: Path, **env: str) -> tuple[int, list[str], Path]:
    sock = tmp_path / "p.sock"
    sock.write_text("")  # left behind by a killed predecessor, as dockerd finds it after a plugin crash
    full_env = dict(os.environ, LOGBRIDGE_SOCKET=str(sock), LOGBRIDGE_LOG_ROOT=str(tmp_path / "logs"),
                    LOGBRIDGE_STATE_DIR=str(tmp_path / "state"), PYTHONPATH=str(ROOT), **env)
    proc = subprocess.run([sys.executable, "-m", "driver"], env=full_env, cwd=ROOT, capture_output=True,
                          timeout=60)
    lines = (proc.stdout + proc.stderr).decode().splitlines()
    return proc.returncode, lines, sock


def _read_only_tmpfs(path: Path) -> None:
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(path)], check=True)


def _one_error_line(lines: list[str]) -> dict:
    assert len(lines) == 1, lines
    record = json.loads(lines[0])
    assert record["level"] == "error" and "exception" not in record, record
    return record


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
@pytest.mark.parametrize("which", ["state", "logs"])
def test_a_read_only_directory_is_one_clear_line_and_no_socket(tmp_path, which):
    _read_only_tmpfs(tmp_path / which)
    try:
        rc, lines, sock = _run(tmp_path)
    finally:
        subprocess.run(["umount", str(tmp_path / which)], check=True)
    record = _one_error_line(lines)
    assert rc == 1
    assert str(tmp_path / which) in record["msg"] and "Read-only file system" in record["msg"]
    mount = "state-dir.source" if which == "state" else "log-root.source"
    assert f"docker plugin set logbridge {mount}=" in record["msg"]
    assert not sock.exists()


def test_a_file_where_the_state_dir_should_be_is_named(tmp_path):
    (tmp_path / "state").write_text("not a directory")
    rc, lines, sock = _run(tmp_path)
    record = _one_error_line(lines)
    assert rc == 1 and str(tmp_path / "state") in record["msg"] and not sock.exists()


def test_a_malformed_setting_is_named(tmp_path):
    rc, lines, sock = _run(tmp_path, RETENTION_SECONDS="7d")
    record = _one_error_line(lines)
    assert rc == 1 and "RETENTION_SECONDS='7d'" in record["msg"] and not sock.exists()
