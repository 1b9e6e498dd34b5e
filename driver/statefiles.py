"""The plugin's small JSON state files (the FIFO table, the totals, each container's folded counts), written
atomically; a write the disk refuses is warned about once, counted and retried until it lands.

A full state dir must not end a task with a traceback nor lose the latest state: the file keeps its previous
content (a new one is renamed over it only once written whole) and the newest content is written when there is room.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from collections.abc import Callable

log = logging.getLogger(__name__)

RETRY_AFTER = 1.0  # seconds between attempts to write a state file the disk refused


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
