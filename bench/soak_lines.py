"""What the soak's containers wrote, as json.log and the aggregator hold it: numbered lines tallied per container
incarnation.

Each soak container writes lines `<name> <incarnation> <seq>`: the incarnation goes up by one at every start of the
container (docker restart), seq counts from 0 within it. A `SeqTally` counts how often each (name, incarnation,
seq) was seen, so distinct lines, duplicates and gaps come out exact without keeping a line per entry.

`JsonLogFiles` reads one container's json.log and its rotated files (`.1`, `.2.gz`, ...) as they rotate, are
compressed, deleted (max-file) and, after a plugin SIGKILL, truncated back and rewritten by the crash recovery.
A file is named by its first line (unique: it carries a timestamp and a seq), so a file keeps its name through
renames and compression; the bytes read from it are kept (bounded by max-size × max-file), and each pass tallies
what was appended and un-tallies what a truncation took back.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import zlib
from dataclasses import dataclass, field

_ROTATED = re.compile(r"\.(\d+)(\.gz)?")


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


class JsonLogFiles:
    """One container's json.log files, tallied into `tally` pass by pass (`scan`)."""

    def __init__(self, path: str, tally: SeqTally) -> None:
        self.path = path
        self.tally = tally
        self._files: dict[bytes, _Seen] = {}  # first line → what was read of that file
        self._gz_first: dict[tuple[str, int, int], bytes] = {}  # (name, inode, size) of a .gz read → first line
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
    def _read(path: str) -> bytes | None:
        try:
            if path.endswith(".gz"):
                with gzip.open(path, "rb") as f:
                    data = f.read()
            else:
                with open(path, "rb") as f:
                    data = f.read()
        except FileNotFoundError:
            return None
        except (OSError, EOFError, zlib.error):
            return None  # a .gz being replaced: read it next pass
        return data[: data.rfind(b"\n") + 1]

    def _apply(self, data: bytes, delta: int) -> None:
        for line in data.splitlines():
            text = json_log_text(line)
            if text is None:
                self.tally.foreign += delta
            else:
                self.tally.add_text(text, delta)

    def scan(self) -> None:
        present: set[bytes] = set()
        gz_listed: set[tuple[str, int, int]] = set()
        complete = True
        for path in self._names():
            gz_key = None
            if path.endswith(".gz"):
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    complete = False
                    continue
                gz_key = (os.path.basename(path), st.st_ino, st.st_size)
                gz_listed.add(gz_key)
                if gz_key in self._gz_first:  # compressed files do not change: read once
                    present.add(self._gz_first[gz_key])
                    continue
            data = self._read(path)
            if data is None:
                complete = False
                continue
            if not data:
                continue  # a new current file with no whole line yet
            first = data[: data.index(b"\n") + 1]
            present.add(first)
            seen = self._files.get(first)
            old = seen.data if seen else b""
            if data.startswith(old):
                self._apply(data[len(old):], +1)
            else:
                # Shorter (truncated back) or different bytes: un-tally from the last common line on.
                common = 0
                for a, b in zip(old, data, strict=False):
                    if a != b:
                        break
                    common += 1
                cut = old.rfind(b"\n", 0, common) + 1 if common < len(old) else len(old)
                if len(data) < len(old) and old.startswith(data):
                    self.truncations += 1
                else:
                    self.rewrites += 1
                self._apply(old[cut:], -1)
                self._apply(data[cut:], +1)
            self._files[first] = _Seen(data)
            if gz_key:
                self._gz_first[gz_key] = first
        if complete:  # forget the files max-file deleted (only after a pass that read every name it listed)
            for first in [f for f in self._files if f not in present]:
                del self._files[first]
            for key in [k for k in self._gz_first if k not in gz_listed]:
                del self._gz_first[key]


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
