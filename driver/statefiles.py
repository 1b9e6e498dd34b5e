"""The plugin's small JSON state files (the FIFO table, the totals, each container's Info, folded counts and
cursors): written atomically, each with a format version; read back with a check that sets aside what cannot be
trusted; a write the disk refuses is warned about once, counted and retried until it lands.

A full state dir must not end a task with a traceback nor lose the latest state: the file keeps its previous
content (a new one is renamed over it only once written whole) and the newest content is written when there is room.

A file that cannot be read back (truncated by a kill of the writer of an older version, zero-filled after a power
cut when its blocks never reached the disk, garbage, or written by a logbridge with another format) must not stop
the plugin from starting: ``load`` refuses it, ``set_aside`` renames it to ``<name>.bad``, logs once what the caller
does instead, and counts it (``recovered``, a metric). The caller's fallback never skips undelivered data.

Durability: none of these files is fsynced (see the README's fsync policy): a power cut may leave the previous
content, an empty or a zero-filled file, which the check above catches.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections import Counter
from collections.abc import Callable

log = logging.getLogger(__name__)

RETRY_AFTER = 1.0  # seconds between attempts to write a state file the disk refused
FORMAT = 1  # the "format" key of every state file this version writes; files without one are from before it
FORMAT_KEY = "format"

# (file kind, problem) → how many state files were set aside since the plugin started (a metric). Module-level like
# the logging config: cursor and journal loaders deep in a pipeline report here without a handle threaded to them.
recovered: Counter = Counter()


class StateUnreadable(ValueError):
    """A state file that cannot be trusted; ``problem`` is ``corrupt`` or ``foreign`` (another format)."""

    def __init__(self, path: str, problem: str, detail: str) -> None:
        super().__init__(f"{path}: {detail}")
        self.path, self.problem, self.detail = path, problem, detail


def versioned(data: dict) -> dict:
    """``data`` with this version's format key, as every state file is written."""
    return {FORMAT_KEY: FORMAT, **data}


def parse(path: str, raw: bytes) -> dict:
    """A state file's object, checked: JSON, an object, a format this version reads (``FORMAT`` or none)."""
    if not raw.strip(b"\0 \t\r\n"):
        raise StateUnreadable(path, "corrupt", f"empty or zero-filled ({len(raw)} bytes)")
    try:
        # Trailing padding (a cursor's slot) is spaces; NUL bytes are a tail that never reached the disk.
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise StateUnreadable(path, "corrupt", f"not JSON ({exc.__class__.__name__}: truncated or garbage)") from None
    if not isinstance(data, dict):
        raise StateUnreadable(path, "corrupt", f"a JSON {type(data).__name__}, not an object")
    version = data.get(FORMAT_KEY, 0)
    if version not in (0, FORMAT):
        raise StateUnreadable(path, "foreign", f"format {version!r}, written by another logbridge version "
                                               f"(this one reads format {FORMAT})")
    return data


def load(path: str) -> dict | None:
    """The checked content of a state file; None if there is none. Raises StateUnreadable."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise StateUnreadable(path, "corrupt", "a directory, not a file") from None
    return parse(path, raw)


def set_aside(exc: StateUnreadable, kind: str, action: str, **fields) -> None:
    """Rename an unreadable state file to ``<name>.bad`` (so the next start does not meet it again, and it is
    there to look at), log it once with what is done instead, and count it."""
    recovered[(kind, exc.problem)] += 1
    try:
        os.replace(exc.path, exc.path + ".bad")
    except OSError:
        pass  # a read-only or full state dir: the file stays, the fallback is the same
    log.error("unreadable state file set aside: %s", action,
              extra={"path": exc.path, "problem": exc.problem, "detail": exc.detail, **fields})


def write_atomic(path: str, text: str) -> None:
    """Write a new file and rename it over ``path``: a reader or a crash sees the old content or the new."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError:
        try:
            os.unlink(tmp)  # a torn temporary file only takes the room that is missing
        except OSError:
            pass
        raise
    os.replace(tmp, path)


class StateFiles:
    """Saves state files on the event loop; ``failures`` counts refused writes by file name (a metric)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, retry_after: float = RETRY_AFTER) -> None:
        self._loop = loop
        self._retry_after = retry_after
        self.failures: Counter = Counter()
        self._owed: dict[str, Callable[[], str]] = {}  # path → renders its newest content
        self._timer: asyncio.TimerHandle | None = None

    def save(self, path: str, render: Callable[[], str]) -> bool:
        """Write ``render()`` to ``path`` now, or later if the disk refuses it. True if it was written now."""
        try:
            write_atomic(path, render())
        except FileNotFoundError:
            self._owed.pop(path, None)  # its directory is gone (the container's state was removed): nothing to keep
            return False
        except OSError as exc:
            self.failures[os.path.basename(path)] += 1
            if path not in self._owed:
                log.warning("could not save state file: retrying until it can be written",
                            extra={"path": path, "error": str(exc)})
            self._owed[path] = render
            self._schedule()
            return False
        if self._owed.pop(path, None) is not None:
            log.info("state file saved after earlier failures", extra={"path": path})
        return True

    @property
    def owed(self) -> list[str]:
        return list(self._owed)

    def retry(self) -> None:
        """Try every file still owed once more (also at shutdown)."""
        self._timer = None
        for path, render in list(self._owed.items()):
            self.save(path, render)

    def _schedule(self) -> None:
        if self._timer is None and not self._loop.is_closed():
            self._timer = self._loop.call_later(self._retry_after, self.retry)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
