"""Reading a state dir's files without the plugin's machinery: stdlib only, so `python3 -m driver status` can
read them from a plain checkout on the host, and the restart logic can look before it opens anything.

Layout (docs/architecture.md): ``<state dir>/containers/<id>/`` holds ``info.json``, ``journal/<offset>.seg`` and
``cursors/<consumer>.json`` (JSON padded to a 512-byte slot: a plain ``json.load`` reads it).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

SEGMENT_SUFFIX = ".seg"  # as driver.journal names segments


@dataclass
class SavedCursor:
    pos: int = 0
    dropped_frames: int = 0
    extra: dict = field(default_factory=dict)
    saved_at: float | None = None  # the file's mtime; None when the consumer never saved one


def container_dir(state_dir: str, container_id: str) -> str:
    return os.path.join(state_dir, "containers", container_id)


def container_ids(state_dir: str) -> list[str]:
    try:
        return sorted(os.listdir(os.path.join(state_dir, "containers")))
    except FileNotFoundError:
        return []


def read_info(cdir: str) -> dict:
    """The Info dockerd sent with StartLogging ({} if missing or unreadable)."""
    try:
        with open(os.path.join(cdir, "info.json"), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    info = data.get("info", {}) if "format" in data else data  # format 0 (no version key): the Info itself
    return info if isinstance(info, dict) else {}


def read_cursor(cdir: str, name: str) -> SavedCursor:
    path = os.path.join(cdir, "cursors", f"{name}.json")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
            saved_at = os.fstat(f.fileno()).st_mtime
    except (OSError, ValueError):
        return SavedCursor()
    return SavedCursor(int(data.get("pos", 0)), int(data.get("dropped_frames", 0)), dict(data.get("extra", {})),
                       saved_at)


def cursor_names(cdir: str) -> list[str]:
    """The consumers that saved a cursor in a container's state (json.log's and each output's)."""
    try:
        return sorted(n[: -len(".json")] for n in os.listdir(os.path.join(cdir, "cursors")) if n.endswith(".json"))
    except FileNotFoundError:
        return []


def journal_end(cdir: str) -> int | None:
    """The stream offset after the journal's last byte (the last segment's name plus its size); None without
    segments."""
    journal = os.path.join(cdir, "journal")
    try:
        starts = sorted(int(n[: -len(SEGMENT_SUFFIX)]) for n in os.listdir(journal) if n.endswith(SEGMENT_SUFFIX))
    except (FileNotFoundError, ValueError):
        return None
    if not starts:
        return None
    try:
        return starts[-1] + os.path.getsize(os.path.join(journal, f"{starts[-1]:020d}{SEGMENT_SUFFIX}"))
    except FileNotFoundError:  # removed by the cap or retention meanwhile
        return starts[-1]
