"""bench.soak_lines: the soak's tallies of numbered lines, over json.log files written by the real rotating writer
(rename, gzip, max-file deletes) and cut back by crash recovery, so the soak's lost/duplicate verdicts are exact."""

from __future__ import annotations

import gzip
import json

import pytest

from bench.soak_lines import FORGET_AFTER, JsonLogFiles, RecordsFile, SeqTally, parse_line
from driver.logfile import LogFile


def line(name: str, inc: int, seq: int) -> bytes:
    return json.dumps({"log": f"{name} {inc} {seq}\n", "stream": "stdout",
                       "time": f"2026-12-02T03:00:00.{seq:09d}Z"}).encode() + b"\n"


def test_parse_line_takes_only_numbered_lines():
    assert parse_line("soak-01 3 17\n") == ("soak-01", 3, 17)
    assert parse_line("soak-01 x 17\n") is None
    assert parse_line("hello\n") is None


def test_tally_counts_distinct_duplicates_and_gaps():
    t = SeqTally()
    for seq in (0, 1, 1, 3):
        t.add("a", 1, seq)
    assert (t.distinct, t.duplicates, t.gaps()) == (3, 1, 1)
    assert t.seen_prefix("a", 1) == 4 and t.missing_below("a", 1, 6) == 3 and t.twice("a") == 1
    t.add("a", 1, 1, delta=-1)  # un-tallied: what a truncation took back
    assert (t.distinct, t.duplicates) == (3, 0)


@pytest.mark.parametrize("compress", [False, True])
def test_every_line_counted_once_through_rotation_compression_and_max_file(tmp_path, compress):
    path = str(tmp_path / "c-json.log")
    tally = SeqTally()
    reader = JsonLogFiles(path, tally)
    log = LogFile(path, max_size=2000, max_file=3, compress=compress)
    try:
        for seq in range(400):  # a scan every 10 lines: files are read before max-file removes them
            log.write_lines([line("a", 1, seq)])
            if seq % 10 == 9:
                log._wait_for_compressor()  # the test's pace, not a timing: each pass sees a settled set
                reader.scan()
    finally:
        log.close()
    reader.scan()
    assert (tally.distinct, tally.duplicates, tally.gaps(), tally.foreign) == (400, 0, 0, 0)
    assert len(reader._files) <= 3  # deleted files are forgotten


def test_a_truncation_then_the_same_lines_again_is_no_duplicate_but_other_lines_are(tmp_path):
    path = tmp_path / "c-json.log"
    tally = SeqTally()
    reader = JsonLogFiles(str(path), tally)
    path.write_bytes(b"".join(line("a", 1, s) for s in range(5)))
    reader.scan()
    cut = len(b"".join(line("a", 1, s) for s in range(3)))
    with open(path, "r+b") as f:  # crash recovery cuts back to the saved cursor ...
        f.truncate(cut)
    reader.scan()
    assert (tally.distinct, reader.truncations) == (3, 1)
    with open(path, "ab") as f:  # ... and the replay writes the same lines again
        f.write(line("a", 1, 3) + line("a", 1, 4))
    reader.scan()
    assert (tally.distinct, tally.duplicates) == (5, 0)
    with open(path, "ab") as f:  # a line written twice is a duplicate
        f.write(line("a", 1, 4))
    reader.scan()
    assert tally.duplicates == 1


def test_a_file_cut_back_to_nothing_and_replayed_is_the_same_file(tmp_path):
    # A plugin SIGKILL whose saved cursor names the file before a rotation: recovery cuts the new json.log to 0
    # bytes and the replay writes its lines again. A pass in between sees an empty file with the same inode.
    path = tmp_path / "c-json.log"
    tally = SeqTally()
    reader = JsonLogFiles(str(path), tally)
    lines = b"".join(line("a", 1, s) for s in range(5))
    path.write_bytes(lines)
    reader.scan()
    with open(path, "r+b") as f:
        f.truncate(0)
    reader.scan()
    assert (tally.distinct, reader.truncations) == (0, 1)
    with open(path, "ab") as f:
        f.write(lines)
    reader.scan()
    assert (tally.distinct, tally.duplicates) == (5, 0)


@pytest.mark.parametrize("rotated", [".1", ".1.gz"])
def test_a_listing_that_misses_a_file_reads_it_again_as_the_same_file(tmp_path, rotated):
    # readdir is not atomic against the writer's renames: one pass may list json.log but not its rotated file
    # (the 30-minute soak counted one whole 50k file twice so). The hook drops the file from one listing.
    path = tmp_path / "c-json.log"
    tally = SeqTally()
    reader = JsonLogFiles(str(path), tally)
    old = b"".join(line("a", 1, s) for s in range(5))
    if rotated.endswith(".gz"):
        with gzip.open(str(path) + rotated, "wb") as f:
            f.write(old)
    else:
        (tmp_path / f"c-json.log{rotated}").write_bytes(old)
    path.write_bytes(line("a", 1, 5))
    reader.scan()
    listed = reader._names
    reader._names = lambda: [p for p in listed() if not p.endswith(rotated)]
    reader.scan()
    reader._names = listed
    reader.scan()
    assert (tally.distinct, tally.duplicates) == (6, 0)
    for _ in range(FORGET_AFTER):  # deleted for good (max-file): forgotten after that many listings
        (tmp_path / f"c-json.log{rotated}").unlink(missing_ok=True)
        reader.scan()
    assert len(reader._files) == 1


def test_bytes_rewritten_differently_are_tallied_from_where_they_differ(tmp_path):
    path = tmp_path / "c-json.log"
    tally = SeqTally()
    reader = JsonLogFiles(str(path), tally)
    path.write_bytes(line("a", 1, 0) + line("a", 1, 1) + line("a", 1, 2))
    reader.scan()
    path.write_bytes(line("a", 1, 0) + line("a", 1, 1) + line("a", 1, 1) + line("a", 1, 2))  # in place, longer
    reader.scan()
    assert (tally.distinct, tally.duplicates, reader.rewrites) == (3, 1, 1)


def test_records_file_reads_whole_records_only(tmp_path):
    out = tmp_path / "records.jsonl"
    tally = SeqTally()
    records = RecordsFile(str(out), tally)
    rec = json.dumps({"tag": "t", "record": {"log": "a 1 0\n"}}).encode() + b"\n"
    out.write_bytes(rec + rec[:10])  # a torn last line: read next time
    records.scan()
    assert (records.records, tally.distinct) == (1, 1)
    with open(out, "ab") as f:
        f.write(rec[10:])
    records.scan()
    assert (records.records, tally.distinct, tally.duplicates) == (2, 1, 1)
