"""A test-only output: every entry appended to a file as one JSON line, turned on by ``testfile-path=<file>``.

It proves that an output plugs into the pipeline from outside driver/: nothing in pipeline.py, registry.py or
options.py names it. Unit tests ``register`` its ``OUTPUT``; a plugin process loads it with
``LOGBRIDGE_OUTPUT_MODULES=tests.support.file_output``.

Delivery is at least once, like a real output's: the lines are appended, then the cursor is saved.
"""

from __future__ import annotations

import json

from driver.frames import FrameDecoder
from driver.journal import Cursor, CursorStore, Journal
from driver.options import TEXT, Option
from driver.outputs import Output
from driver.sinks.base import read_frames

NAME = "testfile"
BATCH_BYTES = 64 << 10


class FileSink:
    name = NAME

    def __init__(self, journal: Journal, store: CursorStore, path: str) -> None:
        self.journal = journal
        self.store = store
        self.path = path
        self.decoder = FrameDecoder()
        self.cursor: Cursor = store.load(NAME)
        if self.cursor.pos < journal.start:
            self.cursor.pos = journal.start
        self.sealed = False
        self._saved_pos = self.cursor.pos
        self.acked = int(self.cursor.extra.get("acked", 0))  # lifetime, saved with the cursor
        self.saved = {"acked": self.acked}  # as last saved: what the metrics show (driver.outputs.OutputConsumer)
        journal.cursors[NAME] = self.cursor

    @property
    def saved_pos(self) -> int:
        return self._saved_pos

    @property
    def done_pos(self) -> int:
        return self._saved_pos

    @property
    def up(self) -> bool:
        return True

    def caught_up(self) -> bool:
        return self.cursor.pos >= self.journal.end

    async def step(self, loop, executor) -> bool:
        return await loop.run_in_executor(executor, self._step)

    def _step(self) -> bool:
        start = self.cursor.pos
        got = read_frames(self.journal, self.decoder, start, BATCH_BYTES, self.sealed)
        if got is None:
            if start < self.journal.start:
                self.journal.skip_lost(self.cursor)
                return True
            return False
        entries, used = got
        if used == 0:
            return False
        if not self.journal.take(self.cursor, start, used):
            return True
        with open(self.path, "a", encoding="utf-8") as f:
            f.writelines(json.dumps({"source": e[0], "line": e[2].decode("utf-8", "replace"), "partial": e[3]}) + "\n"
                         for e in entries)
        self._saved_pos = start + used
        self.acked += len(entries)
        self.flush()
        return True

    def flush(self) -> None:
        self.store.save(self.cursor, pos=self._saved_pos, extra={"acked": self.acked})
        self.saved = {"acked": self.acked}

    def close(self) -> None:
        self.flush()

    async def aclose(self) -> None:
        pass


OPTIONS = (Option("testfile-path", TEXT, None, "test-only output: append every entry to this file", "testfile"),)

OUTPUT = Output(name=NAME, options=OPTIONS, turned_on=lambda opts: bool(opts["testfile-path"]),
                build=lambda c, shared: FileSink(c.journal, c.store, c.opts["testfile-path"]))


def read_lines(path) -> list[str]:
    """The lines the output delivered, in order (a row still being written, without its newline, is not one yet)."""
    try:
        with open(path, encoding="utf-8") as f:
            return [json.loads(row)["line"] for row in f if row.endswith("\n")]
    except FileNotFoundError:
        return []

