"""A container's journal: the raw frame stream from its FIFO, kept on disk until every consumer has passed it.

The stream is one logical byte sequence; offsets are positions in it. It is stored as segment files named by the
offset of their first byte, so a segment boundary may fall inside a frame. The writer moves bytes from the FIFO with
``os.splice`` (in the kernel, no copy through Python): a byte is either still in the pipe or already in a segment,
so killing the process loses nothing, and after a restart the journal's end is simply the size of its files.

Consumers (the json.log writer, each sink) read through a ``Cursor``: ``pos`` is the frame boundary up to which
they have taken entries. A byte cap bounds the journal: beyond it the oldest segment is given up even if a consumer
has not read it; that consumer's cursor jumps to the next whole frame and the frames it lost are counted.
"""

from __future__ import annotations

import bisect
import errno
import json
import os
import secrets
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path

from driver.frames import HEADER, MAX_FRAME, last_boundary

SEGMENT_SUFFIX = ".seg"
INCARNATION_FILE = "incarnation"  # beside the segments: 16 hex digits and a newline
_INCARNATION_CHARS = frozenset("0123456789abcdef")
_unpack_len = struct.Struct(">I").unpack_from


class JournalFull(OSError):
    """The state dir's file system refused the bytes (ENOSPC/EDQUOT)."""


def _is_full(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


@dataclass
class Cursor:
    """One consumer's place in the journal. ``pos`` is always a frame boundary (or a resync point)."""

    name: str
    pos: int = 0
    dropped_frames: int = 0  # frames the byte cap took before this consumer read them
    dropped_bytes: int = 0
    extra: dict = field(default_factory=dict)  # consumer state saved with the position (e.g. json.log size)


class Journal:
    """Segment files of one container's frame stream. Thread-safe: the loop writes, consumer threads read."""

    def __init__(self, directory: str, segment_bytes: int = 8 << 20, max_bytes: int = 256 << 20) -> None:
        self.dir = directory
        self.segment_bytes = segment_bytes
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self._starts: list[int] = sorted(
            int(n[: -len(SEGMENT_SUFFIX)]) for n in os.listdir(directory) if n.endswith(SEGMENT_SUFFIX)
        )
        self._read_fds: dict[int, int] = {}
        self.cursors: dict[str, Cursor] = {}
        self.dropped_segments = 0
        fresh = not self._starts
        if fresh:
            self._starts.append(0)
            self._create_segment(0)
        self.incarnation = self._incarnation(new=fresh)
        last = self._starts[-1]
        self._wfd = os.open(self._path(last), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._wstart = last
        self._wlen = os.fstat(self._wfd).st_size
        self.end = last + self._wlen

    # ---- layout -------------------------------------------------------------------------------------------
    def _path(self, start: int) -> str:
        return os.path.join(self.dir, f"{start:020d}{SEGMENT_SUFFIX}")

    def _create_segment(self, start: int) -> None:
        fd = os.open(self._path(start), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.close(fd)

    def _incarnation(self, new: bool) -> str:
        """This journal's random id: offsets name entries only within one incarnation of the stream.

        A journal that starts again at offset 0 (retention removed a finished container's state, the state dir
        was reset) is a new incarnation, so ids made of (incarnation, offset), such as the Elasticsearch
        output's document ids, never name an earlier line. Made with the first segment and read back after a
        restart; a missing or unreadable file gets a new id (resends may then be duplicated, never mistaken
        for lines already indexed). If the disk refuses the file, the id lives for this run only."""
        path = os.path.join(self.dir, INCARNATION_FILE)
        if not new:
            try:
                with open(path, encoding="ascii") as f:
                    text = f.read().strip()
                if len(text) == 16 and set(text) <= _INCARNATION_CHARS:
                    return text
            except (OSError, ValueError):
                pass
        value = secrets.token_hex(8)
        tmp = path + ".tmp"
        try:
            with open(tmp, "w", encoding="ascii") as f:
                f.write(value + "\n")
            os.replace(tmp, path)
        except OSError:
            Path(tmp).unlink(missing_ok=True)
        return value

    @property
    def start(self) -> int:
        return self._starts[0]

    def known_boundary(self) -> int:
        """A frame boundary near the end: the furthest consumer position (the start if there is none)."""
        return max((c.pos for c in self.cursors.values() if c.pos >= self.start), default=self.start)

    def size(self) -> int:
        return self.end - self.start

    def segment_count(self) -> int:
        return len(self._starts)

    # ---- writing (event loop thread only) ---------------------------------------------------------------------
    def _roll_if_full(self) -> None:
        if self._wlen >= self.segment_bytes:
            self._roll()

    def _roll(self) -> None:
        """Start a new segment at the end offset (the writer's, or a closing caller's when no writer is left)."""
        start = self.end
        try:
            fd = os.open(self._path(start), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            if _is_full(exc):
                raise JournalFull(exc.errno, "no room for a new journal segment") from exc
            raise
        with self._lock:
            os.close(self._wfd)
            self._wfd, self._wstart, self._wlen = fd, start, 0
            self._starts.append(start)

    def splice_from(self, fifo_fd: int, budget: int) -> int:
        """Move up to ``budget`` bytes from the FIFO. Returns bytes moved; -1 at EOF; 0 when the pipe is empty.
        JournalFull only when nothing was moved (bytes moved before the disk filled are reported first)."""
        moved = 0
        while moved < budget:
            try:
                self._roll_if_full()
                want = min(budget - moved, self.segment_bytes - self._wlen)
                n = os.splice(fifo_fd, self._wfd, max(want, 1 << 16), offset_dst=self._wlen)
            except BlockingIOError:
                return moved
            except OSError as exc:
                if not _is_full(exc):
                    raise
                if moved:
                    return moved
                if isinstance(exc, JournalFull):
                    raise
                raise JournalFull(exc.errno, "journal file system is full") from exc
            if n == 0:
                return moved if moved else -1
            self._wlen += n
            self.end += n
            moved += n
        return moved

    def write(self, data: bytes) -> int:
        """Append bytes read by other means (the disk-full path). Returns how many were stored."""
        done = 0
        while done < len(data):
            try:
                self._roll_if_full()
                n = os.pwrite(self._wfd, data[done : done + self.segment_bytes - self._wlen], self._wlen)
            except OSError as exc:
                if _is_full(exc):
                    return done
                raise
            self._wlen += n
            self.end += n
            done += n
        return done

    def truncate(self, end: int) -> None:
        """Give back the bytes after ``end``, a frame boundary no consumer has passed (the disk-full path keeps the
        journal a stream of whole frames). Segments that start after ``end`` go; shrinking a file needs no room."""
        with self._lock:
            self._truncate_locked(end)

    def _truncate_locked(self, end: int) -> None:
        end = max(end, self._starts[0])
        if end >= self.end:
            return
        while len(self._starts) > 1 and self._starts[-1] > end:
            start = self._starts.pop()
            fd = self._read_fds.pop(start, None)
            if fd is not None:
                os.close(fd)
            Path(self._path(start)).unlink(missing_ok=True)
        if self._wstart != self._starts[-1]:
            os.close(self._wfd)
            self._wstart = self._starts[-1]
            self._wfd = os.open(self._path(self._wstart), os.O_WRONLY | os.O_CLOEXEC)
        os.ftruncate(self._wfd, end - self._wstart)
        self._wlen = end - self._wstart
        self.end = end

    def take_torn_tail(self) -> bytes:
        """Cut the unfinished frame at the journal's end (where splice stopped on a full disk) and return its bytes.

        Found by walking frame headers from the furthest consumer's position. Behind garbage the boundaries are
        unknown: then nothing is cut (the consumers' decoders resynchronise as for any garbage)."""
        with self._lock:
            pos = self.known_boundary()
            while True:
                chunk = self._read_locked(pos, 1 << 20)
                if len(chunk) < HEADER:
                    break
                whole, garbage = last_boundary(chunk)
                if garbage and not whole:
                    return b""
                if whole:
                    pos += whole
                    continue
                (length,) = _unpack_len(chunk, 0)  # one frame longer than the chunk
                if pos + HEADER + length > self.end:
                    break
                pos += HEADER + length
            tail = self._read_locked(pos, self.end - pos)
            self._truncate_locked(pos)
            return tail

    # ---- reading (any thread) -----------------------------------------------------------------------------------
    def _read_fd(self, start: int) -> int:
        fd = self._read_fds.get(start)
        if fd is None:
            fd = os.open(self._path(start), os.O_RDONLY | os.O_CLOEXEC)
            self._read_fds[start] = fd
        return fd

    def read(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes from ``offset`` (fewer at the end of the journal), across segments."""
        with self._lock:
            return self._read_locked(offset, size)

    def _read_locked(self, offset: int, size: int) -> bytes:
        size = min(size, self.end - offset)
        if size <= 0 or offset < self._starts[0]:
            return b""
        parts = []
        i = bisect.bisect_right(self._starts, offset) - 1
        while size > 0 and i < len(self._starts):
            seg = self._starts[i]
            chunk = os.pread(self._read_fd(seg), size, offset - seg)
            if not chunk:
                break
            parts.append(chunk)
            offset += len(chunk)
            size -= len(chunk)
            if i + 1 < len(self._starts) and offset >= self._starts[i + 1]:
                i += 1
        return b"".join(parts)

    def take(self, cursor: Cursor, start: int, consumed: int) -> bool:
        """Advance ``cursor`` from ``start`` by ``consumed`` bytes unless the byte cap moved it meanwhile.

        A consumer reads at ``start``, decodes without the lock, then takes. If the cap gave up frames under it in
        between, they were counted as dropped: the consumer discards what it decoded and reads again.
        """
        with self._lock:
            if cursor.pos != start:
                return False
            cursor.pos = start + consumed
            return True

    def rewind(self, cursor: Cursor, start: int) -> bool:
        """Move ``cursor`` back to ``start`` (a batch that could not be stored is taken again later). False when
        the cap gave up ``start`` meanwhile: the caller counts the batch as lost."""
        with self._lock:
            if start < self._starts[0]:
                return False
            if cursor.pos > start:
                cursor.pos = start
            return True

    def count_lost(self, cursor: Cursor, frames: int, nbytes: int) -> None:
        """Frames a consumer held in memory whose journal bytes the cap gave up meanwhile."""
        with self._lock:
            cursor.dropped_frames += frames
            cursor.dropped_bytes += nbytes

    def skip_lost(self, cursor: Cursor) -> int:
        """A cursor left before the oldest segment (segments lost outside the cap): jump to the start."""
        with self._lock:
            lost = max(0, self._starts[0] - cursor.pos)
            cursor.pos += lost
            return lost

    # ---- space --------------------------------------------------------------------------------------------------
    def release(self, upto: int, *, closing: bool = False) -> int:
        """Delete segments that lie wholly before ``upto`` (every consumer has saved a cursor past them).

        The segment being written stays, unless ``closing`` (no bytes will be appended in this run) and every
        consumer is at the end: then an empty segment named at the end offset takes its place, so a finished
        container keeps no copy of what json.log already holds, and a restart continues the stream at the same
        offsets, where every saved cursor still points."""
        if closing and upto >= self.end and self._wlen > 0:
            try:
                self._roll()
            except JournalFull:
                pass  # no room for an empty file: the last segment stays until the next release
        removed = 0
        with self._lock:
            while len(self._starts) > 1 and self._starts[1] <= upto:
                self._unlink_oldest()
                removed += 1
        return removed

    def over_cap(self) -> bool:
        return self.end - self._starts[0] > self.max_bytes and len(self._starts) > 1

    def enforce_cap(self, protect: int | None = None) -> list[tuple[str, int, int]]:
        """Give up oldest segments until the journal fits its cap. Returns (cursor, frames, bytes) dropped.

        Nothing at or after ``protect`` is given up: the json.log writer, local and quick, passes it so that a
        burst it is still absorbing never costs lines while a remote sink is stuck."""
        lost: list[tuple[str, int, int]] = []
        with self._lock:
            while self.end - self._starts[0] > self.max_bytes and len(self._starts) > 1:
                cut = self._starts[1]
                if protect is not None and cut > protect:
                    break
                for cur in self.cursors.values():
                    if cur.pos < cut:
                        frames, new_pos = self._walk(cur.pos, cut)
                        cur.dropped_frames += frames
                        cur.dropped_bytes += new_pos - cur.pos
                        lost.append((cur.name, frames, new_pos - cur.pos))
                        cur.pos = new_pos
                self._unlink_oldest()
                self.dropped_segments += 1
        return lost

    def _walk(self, pos: int, limit: int) -> tuple[int, int]:
        """Frames from boundary ``pos`` to the first boundary at or past ``limit``, and that boundary."""
        frames = 0
        chunk = b""
        base = pos
        while pos < limit:
            rel = pos - base
            if len(chunk) - rel < HEADER:
                base, chunk, rel = pos, self._read_locked(pos, 1 << 20), 0
                if len(chunk) < HEADER:
                    return frames, max(pos, limit)
            (length,) = _unpack_len(chunk, rel)
            if length > MAX_FRAME:  # garbage: stop at the cut, the decoder resynchronises from there
                return frames, limit
            pos += HEADER + length
            frames += 1
        return frames, min(pos, self.end)

    def _unlink_oldest(self) -> None:
        start = self._starts.pop(0)
        fd = self._read_fds.pop(start, None)
        if fd is not None:
            os.close(fd)
        Path(self._path(start)).unlink(missing_ok=True)

    def close(self) -> None:
        with self._lock:
            os.close(self._wfd)
            for fd in self._read_fds.values():
                os.close(fd)
            self._read_fds.clear()

    def destroy(self) -> None:
        """Remove every segment (the container is gone and every consumer is done)."""
        self.close()
        for start in self._starts:
            Path(self._path(start)).unlink(missing_ok=True)


class CursorStore:
    """Persists cursors as small JSON files that a SIGKILL or a power cut leaves old or new, never torn.

    A cursor is padded to one 512-byte slot and overwritten in place with a single ``pwrite``: a kill cannot split
    a write within one page, nor a power cut one within a sector. The forward sink saves after every ack, and a
    pwrite costs ~5 µs where writing a temporary file and renaming it over the old one cost ~200 µs. The first save
    of a cursor in a run, and one too long for the slot, still go through a new file renamed into place (which also
    shrinks a longer file from an older version or a long cursor back to one slot).
    """

    SLOT = 512

    def __init__(self, directory: str) -> None:
        self.dir = directory
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self._fds: dict[str, int] = {}  # cursor name -> its file, open for in-place saves
        self._lock = threading.Lock()  # saves run in worker threads: no fd closed (and reused) under a pwrite

    def _path(self, name: str) -> str:
        return os.path.join(self.dir, f"{name}.json")

    def load(self, name: str) -> Cursor:
        try:
            with open(self._path(name), encoding="utf-8") as f:
                data = json.load(f)
        except (FileNotFoundError, ValueError):
            return Cursor(name)
        return Cursor(
            name,
            pos=int(data.get("pos", 0)),
            dropped_frames=int(data.get("dropped_frames", 0)),
            dropped_bytes=int(data.get("dropped_bytes", 0)),
            extra=dict(data.get("extra", {})),
        )

    def save(self, cursor: Cursor, pos: int | None = None, extra: dict | None = None, *,
             in_place_only: bool = False) -> bool:
        """Save ``cursor`` (at ``pos``, with ``extra``); with ``in_place_only`` only if one pwrite does it (the
        cursor has been saved before in this run and fits its slot): returns whether it was saved."""
        data = json.dumps({
            "pos": cursor.pos if pos is None else pos,
            "dropped_frames": cursor.dropped_frames,
            "dropped_bytes": cursor.dropped_bytes,
            "extra": cursor.extra if extra is None else extra,
        }).encode()
        fits = len(data) < self.SLOT
        if fits:
            data = data.ljust(self.SLOT - 1) + b"\n"  # json.load ignores the padding
        with self._lock:
            fd = self._fds.get(cursor.name)
            if fd is not None and fits:
                os.pwrite(fd, data, 0)
                return True
            if in_place_only:
                return False
            self._forget(cursor.name)
            path = self._path(cursor.name)
            tmp = path + ".tmp"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
            if fits:
                self._fds[cursor.name] = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            return True

    def close(self) -> None:
        """Close the files kept open for saves (a later save opens them again)."""
        with self._lock:
            for name in list(self._fds):
                self._forget(name)

    def _forget(self, name: str) -> None:
        fd = self._fds.pop(name, None)
        if fd is not None:
            os.close(fd)
