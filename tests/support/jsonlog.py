"""Reading json.log files (json-file format: one JSON object per line) while a plugin still writes them."""

from __future__ import annotations

import json
from pathlib import Path

from .procs import wait_for


def read_entries(path: Path) -> list[dict]:
    """The complete lines of `path` as dicts ([] if it does not exist yet)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in data.split(b"\n")[:-1]]  # a torn last line is not complete


def wait_for_entries(path: Path, count: int, timeout: float = 15) -> list[dict]:
    """Poll until `path` holds at least `count` complete lines; returns all of them."""

    def enough() -> list[dict] | None:
        entries = read_entries(path)
        return entries if len(entries) >= count else None

    return wait_for(f"{count} lines in {path}", enough, timeout)
