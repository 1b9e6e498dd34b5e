"""The json.log consumer: journal → json-file lines → the container's rotating json.log.

Crash consistency: the cursor is saved together with the json.log file it belongs to (inode) and that file's size.
After a kill the file is cut back to that size and the journal replayed from the cursor, so json.log gets no torn
line and no duplicate. A rotation may fall inside a batch: around it the cursor records the batch start plus how
many of the batch's entries are already in the rotated file (``skip``), which the replay leaves out.

json.log *shorter* than its saved size (a power cut lost its tail; the cursor slot reached the disk, the file's last
blocks did not) is never grown back to that size: that pads it with NUL bytes and the missing lines never come back.
The last point known good is json.log's last complete line: the file is cut after it, and the replay resumes right
after the journal frame that json-file encodes as exactly that line (searched from the journal's start up to the
saved position; the replayed lines are not counted again). If the journal no longer holds that frame (released, or
the file lost every line), the lines in between cannot be located: json.log keeps its complete lines, the replay
resumes at the saved position, and an error names the bytes lost.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Iterator

from driver import statefiles
from driver.frames import HEADER, FrameDecoder
from driver.journal import Cursor, CursorStore, Journal
from driver.jsonfile import decode_line, encode_entries, encode_frames
from driver.logfile import LogEntry, LogFile
from driver.sinks.base import read_frames

log = logging.getLogger(__name__)

NAME = "jsonlog"
BATCH_BYTES = 256 << 10  # journal bytes per batch: ~4k short lines, ~1 MB of Python objects while in flight
MIN_BATCH_BYTES = 4 << 10  # a full disk shrinks batches down to this, so that the lines that fit are written
SAVE_INTERVAL = 1.0  # seconds between cursor saves: bounds replay work after a kill, never correctness


class JsonLogWriter:
    name = NAME

    def __init__(self, journal: Journal, store: CursorStore, path: str, max_size: int | None, max_file: int,
                 compress: bool, attrs_json: bytes | None, stats) -> None:
        self.journal = journal
        self.store = store
        self.logfile = LogFile(path, max_size, max_file, compress, on_rotate=self.on_rotate)
        self.attrs_json = attrs_json
        self.stats = stats  # per-container counters (driver.stats.ContainerStats)
        self.decoder = FrameDecoder()
        self.direct = encode_frames(b"", None) is not None  # json-file lines in C straight from the frames
        self.cursor: Cursor = store.load(NAME)
        self.sealed = False  # the journal will not grow any more (FIFO closed)
        self.disk_full = False  # the last write failed with ENOSPC/EDQUOT (the cap then applies to json.log too)
        self._failing: str | None = None  # errno name of the write error in progress, logged once
        self._batch_limit = BATCH_BYTES
        self._cut_to: int | None = None  # json.log size to cut back to before the next write (a failed cut)
        self._rotated_lines: int | None = None  # lines of the current batch in the file a rotation renamed away
        self._uncounted_until = 0  # replayed entries before this position are already in the saved counts
        self._cut_frame = False  # the next batch starts at a segment start, possibly inside a frame
        self._batch_start = 0
        self._batch_skipped = 0  # entries at the start of the current batch that a replay left out
        self._stats_before: dict = {}
        self._saved_pos = self.cursor.pos
        self.written_pos = self.cursor.pos  # journal position up to which json.log holds every entry
        self._last_save = 0.0
        # Held for a whole batch: close() waits for a batch still running in a worker thread (its task may have
        # been cancelled at the end of a grace period), so the cursor it saves never runs ahead of json.log.
        self._busy = threading.Lock()
        self._closed = False
        self._held = 0  # ReadLogs reading json.log and the journal behind it (see hold())
        self._recover()
        journal.cursors[NAME] = self.cursor

    # ---- crash recovery --------------------------------------------------------------------------------------
    def _recover(self) -> None:
        if self.cursor.recovered:
            self._skip = 0
            self._resume_without_cursor()
            return
        extra = self.cursor.extra
        if "stats" in extra:
            self.stats.restore(extra["stats"])
        self._skip = int(extra.get("skip", 0))
        if self.cursor.pos < self.journal.start:
            # The cap (with json.log's disk full) or a lost segment took frames from the saved position on. json.log
            # is still cut back to the saved size: what it holds past it cannot be matched to the journal any more.
            self.stats.dropped("journal_cap", 0, self.journal.start - self.cursor.pos)
            self.cursor.pos = self._saved_pos = self.written_pos = self.journal.start
            self._skip = 0
            self._cut_frame = True  # a segment start may fall inside a frame: its tail is part of the gap
        if "inode" in extra:
            size = int(extra["size"]) if self.logfile.inode() == extra["inode"] else 0
            if self.logfile.size < size:
                self._resume_after_last_line(size)
            elif self.logfile.size > size and not self._cut_frame and self._journal_lost_json_logs_tail():
                pass
            elif self.logfile.size != size:
                log.info("json.log cut back to its last consistent size",
                         extra={"path": self.logfile.path, "from": self.logfile.size, "to": size})
                self.logfile.truncate_to(size)
        else:
            # Nothing saved yet (a new pipeline): record json.log as it is now, so that a kill before the first
            # periodic save cuts json.log back to here instead of keeping lines that the replay writes again.
            self.flush()

    def _resume_without_cursor(self) -> None:
        """The saved cursor was unreadable (set aside and counted by the store): json.log itself says how far it
        got. Resume after the journal frame of its last whole line; without that frame in the journal, from the
        journal's start (lines json.log may already hold come again: a duplicate, never a gap)."""
        keep, last = _last_whole_line(self.logfile.path, self.logfile.size) if self.logfile.size else (0, b"")
        self.logfile.truncate_to(keep)  # a torn last line: the replay writes it whole
        found = self._frame_end_of(last, self.journal.end) if last else None
        pos = found if found is not None else self.journal.start
        self.cursor.pos = self.written_pos = self._saved_pos = pos
        self._cut_frame = found is None and pos > 0  # a segment start may fall inside a frame
        log.warning("json.log cursor was unreadable: resuming after json.log's last line found in the journal",
                    extra={"path": self.logfile.path, "found_in_journal": found is not None, "resume_at": pos,
                           "journal_start": self.journal.start, "journal_end": self.journal.end})
        self.flush()

    def _resume_after_last_line(self, saved_size: int) -> None:
        """json.log lost its tail (see the module docstring): cut it after its last whole line, resume after the
        frame that line came from."""
        keep, last = _last_whole_line(self.logfile.path, self.logfile.size)
        found = self._frame_end_of(last, self.cursor.pos) if last else None
        log.warning("json.log is shorter than its saved size: replaying from its last whole line",
                    extra={"path": self.logfile.path, "size": self.logfile.size, "saved_size": saved_size,
                           "found_in_journal": found is not None})
        self.logfile.truncate_to(keep)
        if found is None:
            log.error("json.log lost lines that the journal no longer holds",
                      extra={"path": self.logfile.path, "bytes_lost": saved_size - keep})
            return
        self._uncounted_until = self.cursor.pos  # the saved counts include the lines replayed up to here
        self.cursor.pos = self.written_pos = self._saved_pos = found  # and the journal keeps what is replayed
        self._skip = 0

    def _journal_lost_json_logs_tail(self) -> bool:
        """json.log is past its saved size, but the journal no longer holds the frame of its last line: a power cut
        took the journal's tail (its pages, not json.log's, were lost). Cutting json.log back and replaying would
        lose those lines for good, so json.log keeps them and the writer resumes at the journal's end (every
        frame before it is already in json.log: they precede its last line)."""
        keep, last = _last_whole_line(self.logfile.path, self.logfile.size)
        if not last or self._frame_end_of(last, self.journal.end, since=self.cursor.pos) is not None:
            return False
        statefiles.recovered[("journal segment", "behind_json_log")] += 1
        log.error("the journal lost its tail, json.log did not: json.log keeps its lines, resuming at the journal end",
                  extra={"path": self.logfile.path, "cursor": self.cursor.pos, "journal_end": self.journal.end})
        self.logfile.truncate_to(keep)  # a torn last line
        self.cursor.pos = self.written_pos = self._saved_pos = self.journal.end
        self._skip = 0
        self.flush()
        return True

    def _frame_end_of(self, line: bytes, until: int, since: int | None = None) -> int | None:
        """Journal position right after the last frame from ``since`` (the journal's start) to ``until`` that
        json-file encodes as ``line``."""
        try:
            want = decode_line(line)[2]
        except ValueError:
            return None
        decoder, pos, found = FrameDecoder(), self.journal.start if since is None else since, None
        while pos < until:
            got = read_frames(self.journal, decoder, pos, min(1 << 20, until - pos), True)
            if got is None or got[1] == 0:
                break
            entries, used = got
            if any(e[1] == want and encode_entries([e], self.attrs_json)[0] == line for e in entries):
                found = self._exact_frame_end(pos, used, want, line) or found
            pos += used
        return found

    def _exact_frame_end(self, pos: int, size: int, want: int, line: bytes) -> int | None:
        """Within ``size`` journal bytes from boundary ``pos``: the end of the last frame encoded as ``line``."""
        data, at, found = self.journal.read(pos, size), 0, None
        while len(data) - at >= HEADER:
            end = at + HEADER + int.from_bytes(data[at : at + 4], "big")
            if end > len(data):
                break
            entries, _ = FrameDecoder().decode(data[at:end], final=True)
            if entries and entries[0][1] == want and encode_entries(entries[:1], self.attrs_json)[0] == line:
                found = pos + end
            at = end
        return found

    # ---- the batch loop (worker thread) ------------------------------------------------------------------------
    @property
    def saved_pos(self) -> int:
        return self._saved_pos

    @property
    def done_pos(self) -> int:
        return self.written_pos

    def caught_up(self) -> bool:
        return self.cursor.pos >= self.journal.end

    @property
    def failing(self) -> bool:
        """json.log's writes fail now (full disk, EIO...): it will not catch up until they work again."""
        return self._failing is not None

    def unwritten_entries(self, start: int, end: int) -> Iterator[LogEntry]:
        """The journal's entries from ``start`` to ``end`` as ReadLogs serves json.log's (``docker logs`` while
        json.log is behind). Any thread; stops early if the cap gave the bytes up meanwhile."""
        decoder = FrameDecoder()
        while start < end:
            got = read_frames(self.journal, decoder, start, min(BATCH_BYTES, end - start), self.sealed)
            if got is None or got[1] == 0:
                return  # nothing, or a frame still arriving
            entries, used = got
            for source, time_nano, line, partial, last, *_ in entries:
                yield (line + b"\n" if not partial or last else line), source, time_nano
            start += used

    async def step(self, loop, executor) -> bool:
        """One batch in a worker thread: disk writes never run on the event loop."""
        return await loop.run_in_executor(executor, self.pump)

    async def aclose(self) -> None:
        pass

    def pump(self) -> bool:
        with self._busy:
            return False if self._closed or self._held else self._pump()

    def hold(self) -> int:
        """Pause the writer (after the batch in flight) and return ``written_pos``: ReadLogs serves json.log up to
        there and the journal after it, with no line in both. Worker thread; ``unhold()`` then poke the pipeline."""
        with self._busy:
            self._held += 1
            return self.written_pos

    def unhold(self) -> None:
        with self._busy:
            self._held -= 1

    def _pump(self) -> bool:
        start = self.cursor.pos
        # Replays (entries to leave out, counts already saved) and the frame after a gap take the decoded way.
        if self.direct and not (self._skip or self._cut_frame or start < self._uncounted_until):
            more = self._pump_frames(start)
            if more is not None:
                return more
        garbled_before, skipped_before = self.decoder.garbled, self.decoder.skipped_bytes
        recount = start < self._uncounted_until  # replaying what the saved counts already hold (a short json.log)
        limit = min(self._batch_limit, self._uncounted_until - start) if recount else self._batch_limit
        got = read_frames(self.journal, self.decoder, start, limit, self.sealed)
        if got is None:
            if start < self.journal.start:  # the frames are gone (their segment was deleted): count and move on
                self.stats.dropped("journal_cap", 0, self.journal.skip_lost(self.cursor))
                self._cut_frame = True
                return True
            self._maybe_save()
            return False
        entries, used = got
        counts = self.decoder.counts
        if used == 0:
            self._maybe_save()
            return False
        if not self.journal.take(self.cursor, start, used):
            return True  # the cap dropped frames under us; they are counted there
        self._stats_before = self.stats.to_json()  # what a save inside this batch records (see on_rotate)
        # Entries written before a crash are left out of the replay (but counted: the saved counts predate them).
        skip = self._batch_skipped = min(self._skip, len(entries))
        if len(entries) > skip:
            # raises after a rewind: nothing consumed
            self._write(encode_entries(entries[skip:] if skip else entries, self.attrs_json), len(entries),
                        start, used)
        self._skip -= skip
        garbled = self.decoder.garbled - garbled_before
        if garbled and self._cut_frame and self.decoder.skipped_bytes > skipped_before:
            garbled -= 1  # the rest of the frame a lost segment cut in two: counted with the gap, not as garbage
            self.stats.dropped("journal_cap", 0, self.decoder.skipped_bytes - skipped_before)
        self._cut_frame = False
        if not recount:
            if garbled:
                self.stats.garbled(garbled)
            self.stats.received(*counts)
            self.stats.written(len(entries))
        self.written_pos = self.cursor.pos
        self._maybe_save()
        return self.cursor.pos < self.journal.end  # caught up: no second hand-off just to find nothing

    def _pump_frames(self, start: int) -> bool | None:
        """One batch encoded in C straight from the journal's frames (``encode_frames``): the lines the decoded way
        writes (tests/unit/test_jsonlog_frames_c.py) without a tuple per entry. It ends before the first frame C
        leaves to the decoder (garbage, an empty or unusual frame, a torn tail), which starts the next batch, taken
        the decoded way; None (that way now) when that frame is the first."""
        data = self.journal.read(start, self._batch_limit)
        if not data:
            return None
        used, count, _declined, joined, counts = encode_frames(data, self.attrs_json)
        if not count:
            return None
        if not self.journal.take(self.cursor, start, used):
            return True  # the cap dropped frames under us; they are counted there
        self._stats_before = self.stats.to_json()
        self._batch_skipped = 0
        self._write(joined, count, start, used)  # raises after a rewind: nothing consumed
        self.decoder.found_frames()  # as if it had read them: garbage after them is a new incident
        self.stats.received(*counts)
        self.stats.written(count)
        self.written_pos = self.cursor.pos
        self._maybe_save()
        return self.cursor.pos < self.journal.end

    def _write(self, lines: list[bytes] | bytes, n_entries: int, start: int, used: int) -> None:
        """Append the batch's json-file lines (a list, or joined), undoing a torn write on error."""
        self._batch_start = start
        self._rotated_lines = None
        size_before = self.logfile.size if self._cut_to is None else self._cut_to
        try:
            if self._cut_to is not None:  # the torn end of a failed batch could not be cut then: cut it first
                self.logfile.truncate_to(self._cut_to)
                self._cut_to = None
            self.logfile.write_lines(lines)
        except OSError as exc:
            self._undo(exc, start, size_before, n_entries, used)
            raise
        self._batch_limit = min(BATCH_BYTES, self._batch_limit * 2)
        if self._failing is not None:
            log.warning("log disk has room again" if self.disk_full else "json.log writes work again",
                        extra={"path": self.logfile.path, "after": self._failing})
            self._failing = None
            self.disk_full = False

    def _undo(self, exc: OSError, start: int, size_before: int, n_entries: int, used: int) -> None:
        """A write error stopped a batch: cut the torn part and rewind, so the batch is written again later.

        A full disk also makes the batches smaller, so that the lines that fit are written. Any other error (EIO,
        EROFS) is retried the same way: the lines wait in the journal, counted and logged once per episode."""
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        if full:
            self._batch_limit = max(MIN_BATCH_BYTES, self._batch_limit // 4)
        else:
            self.stats.write_errors += 1
        if self._failing is None:
            self._failing = errno.errorcode.get(exc.errno, str(exc.errno))
            log.error("log disk full: lines wait in the journal" if full else
                      "json.log write failed: lines wait in the journal and are written again",
                      extra={"path": self.logfile.path, "error": str(exc)})
        self.disk_full = full
        cut_to = size_before
        if self._rotated_lines is not None:
            # The batch rotated json.log before failing: its first lines are in the rotated file, the rest of it
            # (the torn part) is all the new file holds. The retry leaves out the lines already written.
            cut_to = 0
            self._skip = self._batch_skipped + self._rotated_lines
        try:
            self.logfile.truncate_to(cut_to)
        except OSError:
            self._cut_to = cut_to  # cut before the next write
        if not self.journal.rewind(self.cursor, start):
            # The cap (allowed to while the disk is full) gave up this batch's frames meanwhile: lost, and counted.
            self.stats.dropped("journal_cap", n_entries, used)
            self._skip = 0

    def on_rotate(self, phase: str, lines_done: int) -> None:
        """Called by LogFile around a rotation inside ``write_lines``: save a cursor valid across the rename.

        It points at the batch start with the count of this batch's entries already written; the counts saved with
        it are those from before the batch, and a replay counts the entries it leaves out."""
        if phase == "after":
            self.stats.rotations += 1
            self._rotated_lines = lines_done
        self._save(self._batch_start, skip=self._batch_skipped + lines_done, stats=self._stats_before)

    # ---- cursor ---------------------------------------------------------------------------------------------
    def _maybe_save(self) -> None:
        if self.cursor.pos != self._saved_pos and time.monotonic() - self._last_save >= SAVE_INTERVAL:
            self.flush()

    def flush(self) -> None:
        self._save(self.cursor.pos, skip=0, stats=self.stats.to_json())

    def save_between_batches(self) -> None:
        """Save what is written now (worker thread): the journal cap protects the saved position, so a burst that
        outruns the save interval must not keep the cap from giving up what json.log has already written."""
        with self._busy:
            if not self._closed and self.cursor.pos != self._saved_pos:
                self.flush()

    def _save(self, pos: int, skip: int, stats: dict) -> None:
        extra = {"inode": self.logfile.inode(), "size": self.logfile.size, "skip": skip, "stats": stats}
        try:
            self.store.save(self.cursor, pos=pos, extra=extra)
        except OSError as exc:
            log.warning("could not save cursor", extra={"error": str(exc)})
            return
        self.cursor.extra = extra
        self._last_save = time.monotonic()
        if skip == 0:
            self._saved_pos = pos

    def close(self) -> None:
        with self._busy:
            if self._closed:
                return
            self._closed = True
            self.flush()
            self.logfile.close()


def _last_whole_line(path: str, size: int) -> tuple[int, bytes]:
    """(the size up to and including the last ``\\n`` in the first ``size`` bytes of a file, that last line)."""
    tail, start = b"", size
    with open(path, "rb") as f:
        while start > 0 and tail.count(b"\n") < 2:  # the last line's end and the end of the line before it
            f.seek(start := max(0, start - (64 << 10)))
            tail = f.read(size - start)
    last = tail.rfind(b"\n")
    if last < 0:
        return 0, b""
    return start + last + 1, tail[tail.rfind(b"\n", 0, last) + 1 : last + 1]


def log_path(log_root: str, container_id: str) -> str:
    return os.path.join(log_root, container_id, f"{container_id}-json.log")
