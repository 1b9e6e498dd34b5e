"""Retention: nothing grows without bound, although dockerd tells a plugin nothing when a container is removed.

Two rules, applied periodically to containers that have no pipeline (stopped, nothing left to deliver):
- age: a container whose last frame arrived more than ``retention_seconds`` ago loses its json.log files and its
  state. The age is the last write to its json.log or journal, never StopLogging (every ``docker logs`` on a
  stopped container sends one).
- size: while the log root holds more than ``max_bytes``, the oldest rotated files go first, then whole stopped
  containers, oldest first. The current file of a running container is never touched.

Only logbridge's own files are deleted: with the recommended layout the log root is Docker's containers folder,
whose other files belong to dockerd. There ``docker rm`` removes a container's folder, logs included; the plugin's
state for it (journal, cursors) is forgotten at the next sweep.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from driver.logfile import remove_oldest_rotated
from driver.sinks.jsonlog import log_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetentionPolicy:
    retention_seconds: float = 0.0  # 0: keep stopped containers' logs until the size rule or docker rm removes them
    max_bytes: int = 0  # 0: no global cap


@dataclass
class _Container:
    cid: str
    files: list[str]  # logbridge's files in <log root>/<id>/, current file last
    last_write: float
    running: bool


class Retention:
    def __init__(self, log_root: str, state_dir: str, policy: RetentionPolicy, lock: threading.Lock,
                 is_running: Callable[[str], bool]) -> None:
        self.log_root = log_root
        self.state_dir = state_dir
        self.policy = policy
        self._lock = lock  # the registry holds it while it creates a pipeline
        self._is_running = is_running
        self.removed_containers = 0
        self.removed_files = 0

    def sweep(self) -> None:
        """One pass of the rules (in a worker thread)."""
        self._forget_removed()
        if not (self.policy.retention_seconds or self.policy.max_bytes):
            return
        containers = self._scan()
        if self.policy.retention_seconds > 0:
            horizon = time.time() - self.policy.retention_seconds
            for c in containers:
                if not c.running and c.last_write < horizon:
                    self._remove_container(c, "older than retention")
            containers = [c for c in containers if c.running or c.last_write >= horizon]
        if self.policy.max_bytes > 0:
            self._enforce_size(containers)

    def _forget_removed(self) -> None:
        """State of stopped containers whose log folder is gone (``docker rm`` with the recommended layout, or
        removed by hand): nothing is left to serve or send, so the journal and cursors go too."""
        root = os.path.join(self.state_dir, "containers")
        if not os.path.isdir(root):
            return
        for cid in os.listdir(root):
            if not os.path.isdir(os.path.join(self.log_root, cid)) and not self._is_running(cid):
                with self._lock:
                    if self._is_running(cid) or os.path.isdir(os.path.join(self.log_root, cid)):
                        continue
                    shutil.rmtree(os.path.join(root, cid), ignore_errors=True)
                    self.removed_containers += 1
                log.info("forgot a removed container", extra={"container": cid[:12]})

    def _scan(self) -> list[_Container]:
        state = os.path.join(self.state_dir, "containers")
        ids = set(os.listdir(state)) if os.path.isdir(state) else set()
        logs = glob.glob(os.path.join(self.log_root, "*", "*-json.log*"))
        ids |= {os.path.basename(os.path.dirname(p)) for p in logs}
        out = []
        for cid in sorted(ids):
            files = self._log_files(cid)
            times = [_mtime(f) for f in files]
            times += [_mtime(p) for p in glob.glob(os.path.join(self.state_dir, "containers", cid, "journal", "*"))]
            out.append(_Container(cid, files, max(times, default=0.0), self._is_running(cid)))
        return out

    def _log_files(self, cid: str) -> list[str]:
        current = log_path(self.log_root, cid)
        rotated = glob.glob(current + ".*")
        rotated = [p for p in rotated if not p.endswith(".tmp")]
        rotated.sort(key=lambda p: -_rotation_index(p))  # oldest (highest index) first
        return rotated + ([current] if os.path.exists(current) else [])

    def _enforce_size(self, containers: list[_Container]) -> None:
        total = sum(_size(f) for c in containers for f in c.files)
        if total <= self.policy.max_bytes:
            return
        # One turn per rotated file scanned, oldest first; each removes its container's oldest rotated file as
        # named when the turn comes (the names the scan saw may have shifted since).
        turns = sorted((_mtime(f), c.cid) for c in containers for f in c.files if not f.endswith("-json.log"))
        for _, cid in turns:
            if total <= self.policy.max_bytes:
                return
            removed, freed = remove_oldest_rotated(log_path(self.log_root, cid))
            total -= freed
            for path in removed:
                self.removed_files += 1
                log.info("log root over its size cap: removed a rotated file", extra={"path": path})
        for c in sorted((c for c in containers if not c.running), key=lambda c: c.last_write):
            if total <= self.policy.max_bytes:
                return
            total -= sum(_size(f) for f in c.files if os.path.exists(f))
            self._remove_container(c, "log root over its size cap")

    def _remove_container(self, c: _Container, why: str) -> None:
        with self._lock:
            if self._is_running(c.cid):
                return  # it started again since the scan
            for path in glob.glob(os.path.join(self.log_root, c.cid, f"{c.cid}-json.log*")):
                Path(path).unlink(missing_ok=True)
            try:
                os.rmdir(os.path.join(self.log_root, c.cid))  # only if nothing else (dockerd's files) is in it
            except OSError:
                pass
            shutil.rmtree(os.path.join(self.state_dir, "containers", c.cid), ignore_errors=True)
        self.removed_containers += 1
        log.info("removed a stopped container's logs", extra={"container": c.cid[:12], "reason": why})


def _rotation_index(path: str) -> int:
    suffix = path.rsplit("-json.log.", 1)[-1].split(".")[0]
    return int(suffix) if suffix.isdigit() else 0


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except FileNotFoundError:
        return 0.0


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0
