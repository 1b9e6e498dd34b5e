"""Rotating json.log files and reading them back, written once (the role of moby's loggerutils/logfile.go).

Layout, as json-file makes it (moby v20.10.24 `daemon/logger/loggerutils/logfile.go`): the current file
`path`, then `path.1` (newest) ... `path.(max_file-1)` (oldest), or `path.1.gz` ... with compression. A
compressed file's gzip header carries `{"lastTime":"<RFC3339Nano>"}` in its FEXTRA field, the time of its last
entry, so that readers can skip whole files older than `since` without decompressing them.

The writer is synchronous and meant for one worker thread; readers (`read_entries`, `Follower`) may run in
other threads or processes at the same time. Within one process they agree through `_naming_lock`: the writer
renames files only while holding it and readers open a set of files under it, so a reader never sees a file
twice or misses one however fast the writer rotates. Readers in another process fall back to retrying until
two listings agree, which a writer rotating flat out can defeat.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
import threading
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import BinaryIO

from driver.jsonfile import decode_line, format_time, parse_time

log = logging.getLogger(__name__)

# (log bytes with their `\n` if any, stream, time_nano): what ReadLogs turns into frames.
LogEntry = tuple[bytes, str, int]

# The container folder is Docker's `<root>/containers/<id>` and json-file leaves its mode to dockerd (0710:
# group may traverse, not list). Node agents tail `*-json.log*` by glob, which needs the right to list, so we
# use 0755; the files themselves stay `mode` (0640), so others see names only.
DIR_MODE = 0o755
_READ_BLOCK = 64 * 1024
_FIRST_BLOCK = 4096
_COMPRESS_CHUNK = 1024 * 1024
_SNAPSHOT_ATTEMPTS = 5
_TMP_SUFFIX = ".gz.tmp"
# Striped rather than one per path: a lock per container would have to be forgotten when the container goes.
_NAMING_LOCKS = [threading.RLock() for _ in range(64)]


def _naming_lock(path: str) -> threading.RLock:
    """Held while the names of `path`'s files change (rotation, compression) or a reader opens a set of them."""
    return _NAMING_LOCKS[hash(path) % len(_NAMING_LOCKS)]


@dataclass
class ReadStats:
    """What a read cost: lets tests prove that whole files were skipped."""

    bytes_read: int = 0
    bad_lines: int = 0  # lines that were not json-file entries (a crash's torn write), skipped


# ---------------------------------------------------------------------------------------------------------
# writer


class LogFile:
    """The current json.log plus its rotated predecessors, rotated exactly as json-file does.

    Before each entry, if `max_size` is set and the current file holds at least `max_size` bytes, the file is
    rotated; so a file can exceed `max_size` by one entry. Rotated files shift up by one name and the oldest
    is removed. With `compress`, the new `.1` is gzipped in a background thread (one at a time, like moby's
    rotateMu: the next rotation waits for it).

    `max_file == 1` with `max_size` set: dockerd 20.10 renames the full file to `.1`, which then stays on disk
    forever and is never read; moby master unlinks it. We unlink it (master's behaviour): a file nobody reads
    is only disk usage beyond what `max-size` promises.

    `on_rotate(phase, lines_done)` is called with "before" right before the current file is renamed away and
    with "after" right after the new, empty current file exists; `lines_done` is how many lines of the current
    `write_lines` call are already written (all in the rotated file). The caller saves its cursor there, so
    that after a crash its saved position matches the file the name refers to.
    """

    def __init__(
        self,
        path: str,
        max_size: int | None,
        max_file: int,
        compress: bool,
        mode: int = 0o640,
        on_rotate: Callable[[str, int], None] | None = None,
    ) -> None:
        if max_size is not None and max_size <= 0:
            raise ValueError("max-size must be a positive number")
        if max_file < 1:
            raise ValueError("max-file cannot be less than 1")
        if compress and (max_file < 2 or max_size is None):
            raise ValueError("compress cannot be true when max-file is less than 2 or max-size is not set")
        self.path = path
        self._max_size = max_size
        self._max_file = max_file
        self._compress = compress
        self._mode = mode
        self._on_rotate = on_rotate
        self._compressor: threading.Thread | None = None
        _make_dirs(os.path.dirname(path) or ".")
        self._fd = _open_for_append(path, mode)
        self.size = os.fstat(self._fd).st_size
        self._finish_interrupted_work()

    def inode(self) -> int:
        return os.fstat(self._fd).st_ino

    def write_lines(self, lines: list[bytes] | bytes) -> None:
        """Append whole json-file lines, rotating between lines; one write() per run between rotations.

        ``lines``: a list of lines, or the lines joined (each ending in ``\\n``, the only newline a json-file line
        holds: it escapes every other one).
        On OSError (a full disk) `size` still counts the bytes that reached the file, possibly part of a
        line: the caller can `truncate_to` its last consistent point.
        """
        if not lines:
            return
        max_size = self._max_size
        if isinstance(lines, bytes):
            last_start = lines.rfind(b"\n", 0, len(lines) - 1) + 1
            if max_size is None or self.size + last_start < max_size:
                self._write(lines)
                return
            lines = [line + b"\n" for line in lines.split(b"\n")[:-1]]  # a rotation falls inside: line by line
        # No rotation is due if even the last line starts below max_size: the common case, one write.
        if max_size is None or self.size + sum(map(len, lines)) - len(lines[-1]) < max_size:
            self._write(b"".join(lines))
            return
        start, size = 0, self.size
        for i, line in enumerate(lines):
            if size >= max_size:
                if i > start:
                    self._write(b"".join(lines[start:i]))
                self._rotate(lines_done=i)
                start, size = i, 0
            size += len(line)
        self._write(b"".join(lines[start:]))

    def truncate_to(self, size: int) -> None:
        """Crash recovery: cut the current file back to `size` bytes (the caller's last consistent point)."""
        os.ftruncate(self._fd, size)
        self.size = size

    def close(self) -> None:
        """Close the current file, after waiting for a running compression. Calling it again does nothing."""
        self._wait_for_compressor()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            self.size += n
            view = view[n:]

    def _rotate(self, lines_done: int) -> None:
        self._wait_for_compressor()  # before taking the lock: the compressor takes it to rename its result
        with _naming_lock(self.path):
            if self._max_file > 1:
                _shift_rotated(self.path, self._max_file)
            if self._on_rotate:
                self._on_rotate("before", lines_done)
            try:
                if self._max_file > 1:
                    os.rename(self.path, self.path + ".1")
                else:
                    os.unlink(self.path)
            except FileNotFoundError:
                pass  # removed behind our back: nothing to keep, and json-file goes on the same way
            old_fd, self._fd = self._fd, _create_empty(self.path, self._mode)
        self.size = 0
        os.close(old_fd)
        if self._on_rotate:
            self._on_rotate("after", lines_done)
        if self._compress:
            self._start_compressor([self.path + ".1"])

    def _finish_interrupted_work(self) -> None:
        """Remove half-written `.gz.tmp` files; with compress, gzip rotated files a crash left uncompressed.

        An uncompressed `.N` next to a `.N.gz` is compressed again: `.N` is only removed once its `.gz` is
        complete, so `.N` always holds the full content.
        """
        rotated = _rotated_names(self.path)
        for name in rotated.tmp:
            Path(name).unlink(missing_ok=True)
        if self._compress and rotated.plain:
            self._start_compressor([rotated.plain[n] for n in sorted(rotated.plain)])

    def _start_compressor(self, names: list[str]) -> None:
        self._compressor = threading.Thread(
            target=_compress_all, args=(names, self._mode), name=f"compress {names[0]}", daemon=True
        )
        self._compressor.start()

    def _wait_for_compressor(self) -> None:
        if self._compressor is not None:
            self._compressor.join()
            self._compressor = None


def _make_dirs(directory: str) -> None:
    missing = []
    while directory and not os.path.isdir(directory):
        missing.append(directory)
        directory = os.path.dirname(directory)
    for d in reversed(missing):
        try:
            os.mkdir(d)
        except FileExistsError:
            continue  # another container's writer made it first
        os.chmod(d, DIR_MODE)  # mkdir's mode is masked by the umask


def _open_for_append(path: str, mode: int) -> int:
    try:
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    except FileNotFoundError:
        return _create_empty(path, mode)


def _create_empty(path: str, mode: int) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    os.fchmod(fd, mode)  # the mode must not depend on the process umask: group members read these files
    return fd


def _shift_rotated(path: str, max_file: int) -> None:
    """`.N` -> `.N+1` for the rotated files below the first free number (dropping the oldest if there is
    none), so that `.1` is free.

    A kill between this shift and the rename of the current file to `.1` leaves `.1` free: the next rotation
    fills it instead of shifting the gap along (no file is missing from the numbering, as with json-file).
    Both spellings are shifted whatever `compress` says: a `.N` whose compression failed stays readable and
    in order instead of being overwritten by the next rotation.
    """
    top = max_file - 1
    free = next((n for n in range(1, top) if not any(os.path.exists(f"{path}.{n}{e}") for e in ("", ".gz"))), top)
    if free == top:
        for ext in ("", ".gz"):
            Path(f"{path}.{top}{ext}").unlink(missing_ok=True)
    for i in range(free, 1, -1):
        for ext in ("", ".gz"):
            try:
                os.rename(f"{path}.{i - 1}{ext}", f"{path}.{i}{ext}")
            except FileNotFoundError:
                pass


def _compress_all(names: list[str], mode: int) -> None:
    for name in names:
        try:
            _compress_file(name, mode)
        except FileNotFoundError:
            continue  # nothing was rotated to that name
        except OSError:
            # The plain file stays: readers read it, the next start compresses it.
            log.exception("compressing %s failed", name)


def _compress_file(name: str, mode: int) -> None:
    """`name` -> `name.gz` through `name.gz.tmp`, so that a `.gz` is always complete; then remove `name`."""
    tmp = name + _TMP_SUFFIX
    with open(name, "rb", buffering=0) as src:
        last_time = _last_entry_time(src.fileno(), os.fstat(src.fileno()).st_size, ReadStats())
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        os.fchmod(fd, mode)
        with open(fd, "wb") as dst:
            _write_gzip(src, dst, last_time)
            dst.flush()
            os.fsync(dst.fileno())  # the source is deleted next: the copy must be on disk first
        # `<path>.N` -> `<path>`: under its lock a reader sees either the plain file or its .gz, never both
        with _naming_lock(name.rsplit(".", 1)[0]):
            if _names(name, src.fileno()):
                os.replace(tmp, name + ".gz")
                os.unlink(name)
                return
            os.unlink(tmp)  # removed meanwhile (retention's size rule): its copy must not bring it back


def _names(name: str, fd: int) -> bool:
    """Whether `name` still refers to the file open as `fd`."""
    try:
        st = os.stat(name)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def remove_oldest_rotated(path: str) -> tuple[list[str], int]:
    """Remove `path`'s oldest rotated file (both spellings of its number): (the names removed, bytes freed).

    Under the naming lock, so the name chosen is the oldest file's now: a rotation since the caller looked
    shifts every name by one, and a stale name would remove a newer file and keep the oldest."""
    with _naming_lock(path):
        rotated = _rotated_names(path)
        numbers = [*rotated.plain, *rotated.gz]
        if not numbers:
            return [], 0
        oldest = max(numbers)
        removed, freed = [], 0
        for name in filter(None, (rotated.plain.get(oldest), rotated.gz.get(oldest))):
            try:
                size = os.stat(name).st_size
                os.unlink(name)
            except FileNotFoundError:
                continue
            removed.append(name)
            freed += size
        return removed, freed


def _write_gzip(src: BinaryIO, dst: BinaryIO, last_time: int | None) -> None:
    # Python's gzip module cannot write FEXTRA, so the member is framed by hand (RFC 1952), with the header
    # Go's gzip.Writer makes: MTIME 0, XFL 0, OS 255, and the raw JSON as the extra field as json-file does.
    extra = b'{"lastTime":"' + format_time(last_time) + b'"}' if last_time is not None else b""
    flags = 0x04 if extra else 0
    dst.write(b"\x1f\x8b\x08" + bytes([flags]) + b"\0\0\0\0\0\xff")
    if extra:
        dst.write(struct.pack("<H", len(extra)) + extra)
    deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
    crc = size = 0
    while chunk := src.read(_COMPRESS_CHUNK):
        crc = zlib.crc32(chunk, crc)
        size += len(chunk)
        dst.write(deflate.compress(chunk))
    dst.write(deflate.flush() + struct.pack("<II", crc, size & 0xFFFFFFFF))


# ---------------------------------------------------------------------------------------------------------
# the set of files


@dataclass
class _Rotated:
    plain: dict[int, str] = field(default_factory=dict)
    gz: dict[int, str] = field(default_factory=dict)
    tmp: list[str] = field(default_factory=list)


_ROTATED_SUFFIX = re.compile(r"\.[1-9][0-9]*(\.gz)?$")
# What follows "<base>." in a rotated file's name. One pattern for every file: one compiled per container cost
# several ms of each StartLogging and a slot in re's cache.
_ROTATED_NUMBER = re.compile(r"([1-9][0-9]*)(\.gz|\.gz\.tmp)?")


def _rotated_names(path: str) -> _Rotated:
    directory, base = os.path.split(path)
    prefix = base + "."
    found = _Rotated()
    try:
        names = os.listdir(directory or ".")
    except FileNotFoundError:
        return found
    for name in names:
        m = _ROTATED_NUMBER.fullmatch(name, len(prefix)) if name.startswith(prefix) else None
        if m is None:
            continue
        full = os.path.join(directory, name)
        if m[2] == _TMP_SUFFIX:
            found.tmp.append(full)
        else:
            (found.gz if m[2] else found.plain)[int(m[1])] = full
    return found


def list_files(path: str, compress: bool) -> list[str]:
    """The files holding the log, oldest first: rotated ones (`.N` before `.N-1`), then the current one.

    With `compress`, rotated files are `.N.gz`, or `.N` while its compression has not finished (the
    uncompressed copy is preferred then, as moby does). Without it `.gz` names are ignored: the writer does
    not make them, so they are left over from an earlier configuration.
    """
    rotated = _rotated_names(path)
    by_number = dict(rotated.gz) if compress else {}
    by_number.update(rotated.plain)
    files = [by_number[n] for n in sorted(by_number, reverse=True)]
    if os.path.exists(path):
        files.append(path)
    return files


@dataclass
class _Source:
    """One file of a snapshot, opened: its name, descriptor, and for plain files where the entries end."""

    name: str
    fd: int
    gz: bool
    end: int  # plain files: just past the last complete line when opened; unused for .gz

    def close(self) -> None:
        os.close(self.fd)


def _open_source(name: str, stats: ReadStats) -> _Source | None:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    gz = name.endswith(".gz")
    end = 0 if gz else _complete_end(fd, os.fstat(fd).st_size, stats)
    return _Source(name, fd, gz, end)


def _open_snapshot(path: str, compress: bool, stats: ReadStats) -> list[_Source]:
    """Open every file of the log, oldest first, as one consistent set.

    A rotation between listing and opening would shift names under us (a file read twice or missed), so the
    set is accepted only if, once everything is open, the listing is unchanged and every name still refers to
    the file opened under it; otherwise it is opened again. Without a lock this is the only way to agree with
    a writer in another thread or process.
    """
    sources: list[_Source] = []
    for _ in range(_SNAPSHOT_ATTEMPTS):
        with _naming_lock(path):  # a writer in this process cannot rotate meanwhile: the first attempt holds
            names = list_files(path, compress)
            sources = [s for s in (_open_source(n, stats) for n in names) if s is not None]
            consistent = len(sources) == len(names) and list_files(path, compress) == names
            if consistent and all(map(_still_named, sources)):
                break
        _close_all(sources)
    else:
        # Rotating faster than we can open a handful of files: give up on consistency rather than on reading.
        sources = [s for s in (_open_source(n, stats) for n in list_files(path, compress)) if s is not None]
    return sources


def _still_named(source: _Source) -> bool:
    return _names(source.name, source.fd)


def _close_all(sources: Iterable[_Source]) -> None:
    for s in sources:
        s.close()


# ---------------------------------------------------------------------------------------------------------
# low-level reading


def _pread(fd: int, size: int, offset: int, stats: ReadStats) -> bytes:
    data = os.pread(fd, size, offset)
    stats.bytes_read += len(data)
    return data


def _complete_end(fd: int, size: int, stats: ReadStats) -> int:
    """Offset just past the last `\\n` before `size`: a torn or in-progress last write is not an entry yet."""
    if size == 0 or _pread(fd, 1, size - 1, stats) == b"\n":
        return size  # the usual case, for one byte
    pos = size - 1
    while pos > 0:
        start = max(0, pos - _READ_BLOCK)
        data = _pread(fd, pos - start, start, stats)
        i = data.rfind(b"\n")
        if i >= 0:
            return start + i + 1
        pos = start
    return 0


def _tail_start(fd: int, end: int, n: int, stats: ReadStats) -> tuple[int, int]:
    """(offset where the last `n` lines before `end` start, how many lines there are from there, <= n).

    Reads backwards from `end` (which is just past a `\\n`), as moby's tailfile does, in blocks that start
    small (most lookups want one short line) and double up to _READ_BLOCK.
    """
    if end == 0:
        return 0, 0
    found = 0  # newlines seen before the final one
    pos = end - 1
    block = min(_FIRST_BLOCK, _READ_BLOCK)
    while pos > 0:
        start = max(0, pos - block)
        block = min(2 * block, _READ_BLOCK)
        data = _pread(fd, pos - start, start, stats)
        i = len(data)
        while (i := data.rfind(b"\n", 0, i)) >= 0:
            found += 1
            if found == n:
                return start + i + 1, n
        pos = start
    return 0, found + 1


def _split_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Complete lines (without `\\n`) of a byte stream; a trailing fragment without `\\n` is dropped."""
    rest = b""
    for chunk in chunks:
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        yield from lines


def _plain_chunks(fd: int, start: int, end: int, stats: ReadStats) -> Iterator[bytes]:
    pos = start
    while pos < end:
        data = _pread(fd, min(_READ_BLOCK, end - pos), pos, stats)
        if not data:
            return  # the file was truncated under us
        pos += len(data)
        yield data


def _gz_chunks(fd: int, stats: ReadStats) -> Iterator[bytes]:
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip framing; zlib skips FEXTRA itself
    pos = 0
    while not inflate.eof:
        data = _pread(fd, _READ_BLOCK, pos, stats)
        if not data:
            log.warning("compressed log file ends early (fd %d)", fd)
            return
        pos += len(data)
        try:
            yield inflate.decompress(data)
        except zlib.error:
            log.warning("compressed log file is corrupt (fd %d)", fd, exc_info=True)
            return


def _gz_last_time(fd: int, stats: ReadStats) -> int | None:
    """The lastTime json-file put in the gzip header's FEXTRA field, or None when absent or unreadable."""
    header = _pread(fd, 12, 0, stats)
    if len(header) < 12 or header[:2] != b"\x1f\x8b" or not header[3] & 0x04:
        return None
    (xlen,) = struct.unpack("<H", header[10:12])
    try:
        return parse_time(json.loads(_pread(fd, xlen, 12, stats))["lastTime"])
    except (ValueError, KeyError, TypeError):
        return None


def _gz_size(fd: int, stats: ReadStats) -> int | None:
    """The uncompressed size modulo 2**32 from a gzip file's trailer (ISIZE), or None if it is too short."""
    size = os.fstat(fd).st_size
    if size < 18:  # the smallest gzip member: 10 bytes of header, 8 of trailer
        return None
    return struct.unpack("<I", _pread(fd, 4, size - 4, stats))[0]


def _gz_head(fd: int, n: int, stats: ReadStats) -> bytes:
    """The first `n` uncompressed bytes of a gzip file (fewer if it holds fewer or is corrupt)."""
    head = b""
    for chunk in _gz_chunks(fd, stats):
        head += chunk
        if len(head) >= n:
            break
    return head[:n]


def _last_entry_time(fd: int, size: int, stats: ReadStats) -> int | None:
    end = _complete_end(fd, size, stats)
    start, count = _tail_start(fd, end, 1, stats)
    if count == 0:
        return None
    try:
        return decode_line(_pread(fd, end - start, start, stats))[2]
    except ValueError:
        return None


def _source_last_time(source: _Source, stats: ReadStats) -> int | None:
    return _gz_last_time(source.fd, stats) if source.gz else _last_entry_time(source.fd, source.end, stats)


def _source_lines(source: _Source, stats: ReadStats, start: int = 0) -> Iterator[bytes]:
    if source.gz:
        return _split_lines(_gz_chunks(source.fd, stats))
    return _split_lines(_plain_chunks(source.fd, start, source.end, stats))


def _decode(lines: Iterable[bytes], stats: ReadStats) -> Iterator[LogEntry]:
    for raw in lines:
        try:
            entry_log, stream, time_nano, _ = decode_line(raw)
        except ValueError:
            stats.bad_lines += 1
            continue
        yield entry_log, stream, time_nano


# ---------------------------------------------------------------------------------------------------------
# history


@dataclass
class _Window:
    """since/until as json-file applies them: skip entries before `since`, end at the first after `until`."""

    since_ns: int | None
    until_ns: int | None
    ended: bool = False

    def apply(self, entries: Iterable[LogEntry]) -> Iterator[LogEntry]:
        for entry in entries:
            t = entry[2]
            if self.since_ns is not None and t < self.since_ns:
                continue
            if self.until_ns is not None and t > self.until_ns:
                self.ended = True
                return
            yield entry

    def before_since(self, source: _Source, stats: ReadStats) -> bool:
        """Whether a whole compressed file ends before `since`, by the lastTime in its gzip header.

        Only `.gz` files are skipped, as json-file skips them: a file's last line may be older than lines before it
        (the clock was set back), so a plain file is read, and nothing is lost to a clock step."""
        if self.since_ns is None or not source.gz or not _ROTATED_SUFFIX.search(source.name):
            return False
        last = _source_last_time(source, stats)
        return last is not None and last < self.since_ns


def _history(sources: list[_Source], tail: int, window: _Window, stats: ReadStats) -> Iterator[LogEntry]:
    if tail == 0:
        return iter(())
    if tail < 0:
        lines = chain.from_iterable(_source_lines(s, stats) for s in sources if not window.before_since(s, stats))
    else:
        lines = _tail_lines(sources, tail, window, stats)
    return window.apply(_decode(lines, stats))


def _tail_lines(sources: list[_Source], n: int, window: _Window, stats: ReadStats) -> Iterator[bytes]:
    """The last `n` lines over all files, reading backwards from the newest file and stopping once found.

    Going back, the first file that ends before `since` ends the search: older files end earlier still.
    """
    parts: list[Iterable[bytes]] = []
    for source in reversed(sources):
        if n <= 0 or window.before_since(source, stats):
            break
        if source.gz:
            # A gzip stream cannot be read backwards: inflate it once, keeping only the last n lines.
            kept: deque[bytes] = deque(maxlen=n)
            total = 0
            for line in _source_lines(source, stats):
                kept.append(line)
                total += 1
            parts.append(kept)
            n -= total
        else:
            start, count = _tail_start(source.fd, source.end, n, stats)
            parts.append(_source_lines(source, stats, start))
            n -= count
    return chain.from_iterable(reversed(parts))


def read_entries(
    path: str,
    *,
    tail: int,
    since_ns: int | None,
    until_ns: int | None,
    compress: bool = True,
    stats: ReadStats | None = None,
) -> Iterator[LogEntry]:
    """(log, stream, time_nano) of the stored entries, oldest first, over rotated (.gz too) and current files.

    `tail`: -1 all, 0 none, N the last N lines. Then, as json-file: entries before `since_ns` are skipped and
    the first entry after `until_ns` ends the read. Lines that are not entries are skipped (`stats.bad_lines`).
    """
    stats = stats if stats is not None else ReadStats()
    sources = _open_snapshot(path, compress, stats)
    try:
        yield from _history(sources, tail, _Window(since_ns, until_ns), stats)
    finally:
        _close_all(sources)


# ---------------------------------------------------------------------------------------------------------
# follow


class Follower:
    """History, then what is appended later, across rotations, without losing or repeating a line.

    The files are opened when the Follower is made. `history(tail)` reads the entries stored up to that
    point; call it (to the end) before the first `poll()`, or not at all. `poll()` returns what was written
    after that point; the caller decides how to wait between polls.

    Rotation is noticed when `path` names another file than the one followed (renamed to `.1`, or unlinked
    with max_file=1). The old file is read to its end first (the writer never writes to it again), then the
    files rotated away completely between two polls, then the new current file from its start. Those
    intermediate files are the rotated files newer than the one followed: the ones met, from `.1` up, before
    that file itself (`_Left.is_`).
    """

    def __init__(
        self,
        path: str,
        *,
        since_ns: int | None = None,
        until_ns: int | None = None,
        compress: bool = True,
        stats: ReadStats | None = None,
    ) -> None:
        self._path = path
        self._compress = compress
        self._window = _Window(since_ns, until_ns)
        self.stats = stats if stats is not None else ReadStats()
        snapshot = _open_snapshot(path, compress, self.stats)
        current = snapshot.pop() if snapshot and snapshot[-1].name == path else None
        self._rotated = snapshot  # owned until history() or the first poll()
        self._current = current  # the current file as of the snapshot, for history()
        self._fd = current.fd if current else None
        self._pos = current.end if current else 0
        self._rest = b""
        # The file followed before the current one, to find what was rotated away since; None while the
        # current one is followed, or when no file was followed before it (then every rotated file is new).
        self._left: _Left | None = None
        if current is None and snapshot:
            # Opened between a rotation's rename and the new file's creation: the newest rotated file is the
            # one followed before the current one.
            newest = snapshot[-1]
            self._left = _Left(os.dup(newest.fd), newest.gz, _source_last_time(newest, self.stats))

    @property
    def done(self) -> bool:
        """True once an entry after `until_ns` was seen: nothing more will be returned."""
        return self._window.ended

    def history(self, tail: int) -> Iterator[LogEntry]:
        """The stored entries up to where `poll()` starts (`tail` as in `read_entries`)."""
        sources = self._rotated + ([self._current] if self._current else [])
        try:
            yield from _history(sources, tail, self._window, self.stats)
        finally:
            self._drop_history()

    def poll(self) -> list[LogEntry]:
        """The entries written since the snapshot or the last poll, oldest first."""
        self._drop_history()
        if self._window.ended:
            return []
        lines: list[bytes] = []
        if self._fd is not None:
            lines += self._drain()
            if _inode(self._path) != os.fstat(self._fd).st_ino:
                lines += self._drain()  # what the writer added before it rotated the file away
                self._leave_current()
        if self._fd is None:
            lines += self._enter_current()
        return list(self._window.apply(_decode(lines, self.stats)))

    def close(self) -> None:
        self._drop_history()
        self._forget_left()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _forget_left(self) -> None:
        if self._left is not None:
            os.close(self._left.fd)
            self._left = None

    def _drop_history(self) -> None:
        _close_all(self._rotated)  # the current file's descriptor stays: it is the one followed
        self._rotated, self._current = [], None

    def _drain(self) -> list[bytes]:
        assert self._fd is not None
        chunks = []
        while data := _pread(self._fd, _READ_BLOCK, self._pos, self.stats):
            self._pos += len(data)
            chunks.append(data)
        if not chunks:
            return []
        lines = (self._rest + b"".join(chunks)).split(b"\n")
        self._rest = lines.pop()
        return lines

    def _leave_current(self) -> None:
        assert self._fd is not None
        if self._rest:
            self.stats.bad_lines += 1  # a torn last write: the file is final now
        last_time = _last_entry_time(self._fd, os.fstat(self._fd).st_size, self.stats)
        self._left = _Left(self._fd, False, last_time)  # keeps the descriptor until the next file is entered
        self._fd, self._pos, self._rest = None, 0, b""

    def _enter_current(self) -> list[bytes]:
        with _naming_lock(self._path):
            try:
                fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return []  # between the rename and the creation of the new file: next poll
            between = self._rotated_between(os.fstat(fd).st_ino)
        try:
            lines = [line for s in reversed(between) for line in _source_lines(s, self.stats)]
        finally:
            _close_all(between)
        self._forget_left()
        self._fd, self._pos, self._rest = fd, 0, b""
        return lines + self._drain()

    def _rotated_between(self, entered_inode: int) -> list[_Source]:
        """The files rotated away completely between the left file and the entered one, newest first.

        The walk ends at the left file. Not finding it (rotated out for good while we were away) means every
        rotated file is newer: rotation removes the oldest first. Under the naming lock nothing moves while we
        walk; the walk still copes with a writer in another process, which does not take it."""
        newer: list[_Source] = []  # newest first
        taken: set[int | None] = set()  # inodes and last times of `newer`: a rotation during the walk shifts a
        # file we took to the next number, where we would meet it again
        # The walk goes by number, not by a listing: a rotation shifts `.N` to `.N+1` from the oldest down, so a
        # listing made meanwhile can miss a number for good, while a number missing when opened only means that
        # its file is at the next number already.
        number, highest = 0, 0
        while True:
            number += 1
            if number > highest:
                highest = _highest_rotated(self._path, self._compress)
                if number > highest:
                    break
            source = _open_source(f"{self._path}.{number}", self.stats)
            if source is None and self._compress:
                source = _open_source(f"{self._path}.{number}.gz", self.stats)
            if source is None:
                continue
            inode = os.fstat(source.fd).st_ino
            if inode == entered_inode:
                # Rotated again since we opened it: what is newer comes with the next poll, not now.
                _close_all(newer + [source])
                newer, taken = [], set()
                continue
            last = _source_last_time(source, self.stats)
            if self._left is not None and self._left.is_(source, last, self.stats):
                source.close()
                break
            if inode in taken or (source.gz and last in taken):
                source.close()
                continue
            newer.append(source)
            taken.update((inode, last))
        return newer


@dataclass
class _Left:
    """The file a follower followed before the current one: its open descriptor and its last entry's time.

    The descriptor stays open until the files rotated away after it are found. Closed, a file whose names are
    gone (the plain `.1` unlinked once compressed) frees its inode number, which ext4 gives at once to the next
    file created; that file, rotated to `.1` meanwhile, would be taken for this one and never read."""

    fd: int
    gz: bool
    last_time: int | None

    def is_(self, source: _Source, last_time: int | None, stats: ReadStats) -> bool:
        """Whether `source` (whose last entry is at `last_time`) holds this file, under any name.

        The same inode, or, for the `.gz` the compressor made of it, the same content: its size (gzip's
        ISIZE), last entry time and first block. Times alone cannot tell: once the clock steps back a newer
        file's last entry can be older than this one's."""
        own = os.fstat(self.fd)
        if os.fstat(source.fd).st_ino == own.st_ino:
            return True
        if self.gz or not source.gz or last_time != self.last_time:
            return False
        if _gz_size(source.fd, stats) != own.st_size & 0xFFFFFFFF:
            return False
        head = _pread(self.fd, _FIRST_BLOCK, 0, stats)
        return _gz_head(source.fd, len(head), stats) == head


def _highest_rotated(path: str, compress: bool) -> int:
    rotated = _rotated_names(path)
    return max([*rotated.plain, *(rotated.gz if compress else ())], default=0)


def _inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None
