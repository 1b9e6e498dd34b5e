"""What the soak's containers wrote, as json.log and the aggregator hold it: numbered lines tallied per container
incarnation.

Each soak container writes lines `<name> <incarnation> <seq>`: the incarnation goes up by one at every start of the
container (docker restart), seq counts from 0 within it. A `SeqTally` counts how often each (name, incarnation,
seq) was seen, so distinct lines, duplicates and gaps come out exact without keeping a line per entry.

`JsonLogFiles` reads one container's json.log and its rotated files (`.1`, `.2.gz`, ...) as they rotate, are
compressed, deleted (max-file) and, after a plugin SIGKILL, truncated back and rewritten by the crash recovery.
A plain file is known by its inode (which a rename keeps, and a crash recovery that cuts it back to nothing
too), a compressed one by its first line (unique: it carries a timestamp and a seq), which is the first line of the
plain file it was made from; the bytes read from each file are kept (bounded by max-size × max-file), and each pass
tallies what was appended and un-tallies what a truncation took back.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import zlib
from dataclasses import dataclass, field

_ROTATED = re.compile(r"\.(\d+)(\.gz)?")
FORGET_AFTER = 3  # complete passes in a row without a file before its bytes are dropped


def parse_line(text: str) -> tuple[str, int, int] | None:
    """`name incarnation seq` (a trailing newline allowed) → its key, or None for any other line."""
    parts = text.split()
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    return parts[0], int(parts[1]), int(parts[2])


@dataclass
class SeqTally:
    """How often each numbered line was seen. Counts saturate at 255 (one byte per seq)."""

    counts: dict[tuple[str, int], bytearray] = field(default_factory=dict)
    distinct: int = 0  # lines seen at least once
    duplicates: int = 0  # sightings beyond the first
    foreign: int = 0  # lines that are not numbered lines

    def add(self, name: str, incarnation: int, seq: int, delta: int = 1) -> None:
        arr = self.counts.setdefault((name, incarnation), bytearray())
        if seq >= len(arr):
            arr.extend(bytes(seq + 1 - len(arr)))
        before = arr[seq]
        after = min(255, max(0, before + delta))
        arr[seq] = after
        self.distinct += (after > 0) - (before > 0)
        self.duplicates += max(0, after - 1) - max(0, before - 1)

    def add_text(self, text: str, delta: int = 1) -> None:
        key = parse_line(text)
        if key is None:
            self.foreign += delta
        else:
            self.add(*key, delta=delta)

    def seen_prefix(self, name: str, incarnation: int) -> int:
        """One past the highest seq seen of an incarnation (0 if none): what it handed over, by the gap-free
        prefix rule."""
        return len(self.counts.get((name, incarnation), b""))

    def missing_below(self, name: str, incarnation: int, end: int) -> int:
        """Seqs in [0, end) never seen."""
        arr = self.counts.get((name, incarnation), bytearray())
        return arr[:end].count(0) + max(0, end - len(arr))

    def twice(self, name: str) -> int:
        """Duplicate sightings of one container's lines, every incarnation."""
        return sum(sum(c - 1 for c in arr if c > 1) for (n, _), arr in self.counts.items() if n == name)

    def gaps(self) -> int:
        """Seqs below each incarnation's highest seen that were never seen (lines lost so far, since each
        consumer writes a container's lines in order)."""
        return sum(arr.count(0) for arr in self.counts.values())


def json_log_text(line: bytes) -> str | None:
    """The `log` field of one json-file line (None for a line that is not json-file JSON)."""
    try:
        return json.loads(line)["log"]
    except (ValueError, KeyError, TypeError):
        return None


@dataclass
class _Seen:
    data: bytes  # the file's complete lines read so far
    inode: int | None  # while its plain file exists (a crash recovery may cut it back to nothing)
    absent: int = 0  # complete passes in a row whose listing did not show it

    @property
    def first(self) -> bytes:
        return self.data[: self.data.find(b"\n") + 1]


class JsonLogFiles:
    """One container's json.log files, tallied into `tally` pass by pass (`scan`)."""

    def __init__(self, path: str, tally: SeqTally) -> None:
        self.path = path
        self.tally = tally
        self._files: list[_Seen] = []  # each file read so far, plain or compressed (max-file of them)
        self._gz_seen: dict[tuple[str, int, int], _Seen] = {}  # (name, inode, size) of a .gz read whole
        self.truncations = 0  # times a file was found shorter than already read (crash recovery)
        self.rewrites = 0  # times a file's bytes differed from what was read before

    def _names(self) -> list[str]:
        folder, base = os.path.split(self.path)
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            return []
        out = [n for n in names if n == base or (n.startswith(base) and _ROTATED.fullmatch(n[len(base):]))]
        return [os.path.join(folder, n) for n in out]

    @staticmethod
    def _read(path: str) -> tuple[bytes, int] | None:
        """(complete lines, inode), or None for a file gone or being replaced."""
        try:
            if path.endswith(".gz"):
                with gzip.open(path, "rb") as f:
                    data, ino = f.read(), os.fstat(f.fileno()).st_ino
            else:
                with open(path, "rb") as f:
                    data, ino = f.read(), os.fstat(f.fileno()).st_ino
        except FileNotFoundError:
            return None
        except (OSError, EOFError, zlib.error):
            return None  # a .gz being replaced: read it next pass
        return data[: data.rfind(b"\n") + 1], ino

    def _apply(self, data: bytes, delta: int) -> None:
        for line in data.splitlines():
            text = json_log_text(line)
            if text is None:
                self.tally.foreign += delta
            else:
                self.tally.add_text(text, delta)

    def _match(self, data: bytes, inode: int | None) -> _Seen | None:
        """The file read before that this is: the same plain file (inode) unless it now starts with another line,
        or the file whose first line it starts with (renamed, or compressed into a .gz)."""
        first = data[: data.find(b"\n") + 1]
        for seen in self._files:
            if inode is not None and seen.inode == inode and (not first or not seen.data or seen.first == first):
                return seen
        for seen in self._files:
            if first and seen.first == first:
                return seen
        return None

    def _update(self, seen: _Seen, data: bytes) -> None:
        old = seen.data
        if data.startswith(old):
            self._apply(data[len(old):], +1)
        else:
            # Shorter (cut back by crash recovery) or other bytes: un-tally from the last common line on.
            common = 0
            for a, b in zip(old, data, strict=False):
                if a != b:
                    break
                common += 1
            cut = old.rfind(b"\n", 0, common) + 1 if common < len(old) else len(old)
            if old.startswith(data):
                self.truncations += 1
            else:
                self.rewrites += 1
            self._apply(old[cut:], -1)
            self._apply(data[cut:], +1)
        seen.data = data

    def scan(self) -> None:
        matched: set[int] = set()  # id() of the entries a listed file matched
        plain_inodes: set[int] = set()
        gz_listed: set[tuple[str, int, int]] = set()
        complete = True
        for path in self._names():
            gz = path.endswith(".gz")
            if gz:
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    complete = False
                    continue
                key = (os.path.basename(path), st.st_ino, st.st_size)
                gz_listed.add(key)
                if key in self._gz_seen:  # compressed files do not change: read once
                    matched.add(id(self._gz_seen[key]))
                    continue
            got = self._read(path)
            if got is None:
                complete = False
                continue
            data, inode = got
            if not gz:
                plain_inodes.add(inode)
            seen = self._match(data, None if gz else inode)
            if seen is None:
                seen = _Seen(b"", None)
                self._files.append(seen)
            if not gz:
                seen.inode = inode
            self._update(seen, data)
            matched.add(id(seen))
            if gz:
                self._gz_seen[key] = seen
        if complete:
            # Forget the files max-file deleted, and the inodes of plain files gone (compressed: a new file may
            # get the number), only after passes that read every name they listed. A listing made while the writer
            # renames can miss a file (readdir is not atomic against rename), so a file is forgotten only when
            # FORGET_AFTER listings in a row lacked it: forgotten at once, it would be read again as new.
            for s in self._files:
                s.absent = 0 if id(s) in matched else s.absent + 1
                if s.inode not in plain_inodes:
                    s.inode = None
            self._files = [s for s in self._files if s.absent < FORGET_AFTER]
            self._gz_seen = {k: v for k, v in self._gz_seen.items() if k in gz_listed}


class RecordsFile:
    """The aggregator's output (driver.receiver --output: one JSON record per line), tallied as it grows."""

    def __init__(self, path: str, tally: SeqTally) -> None:
        self.path = path
        self.tally = tally
        self._pos = 0
        self.records = 0

    def scan(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._pos)
                data = f.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1  # a torn last line is read again next time
        for line in data[:end].splitlines():
            self.records += 1
            try:
                text = json.loads(line)["record"]["log"]
            except (ValueError, KeyError, TypeError):
                self.tally.foreign += 1
                continue
            self.tally.add_text(text)
        self._pos += end
