"""Corrupt and foreign state files (issue 11 point 3): each is refused by the check in driver.statefiles, set aside
as <name>.bad, logged once and counted; the fallback never moves a cursor past data not yet delivered.

The damage is what a kill or a power cut leaves: a truncated file, a zero-filled tail or a file of zeros (delayed
allocation: the size reached the disk, the blocks did not), garbage, and a file of another logbridge version."""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path

import pytest

from driver import statefiles
from driver.frames import encode_entry
from driver.journal import CursorStore, Journal
from driver.sinks import jsonlog
from driver.stats import ContainerStats
from tests.unit.test_jsonlog_recovery import all_numbers, drain, frames, writer


def damage(path: Path, how: str) -> None:
    """Damage a file in place, as a kill or a power cut leaves it."""
    data = path.read_bytes()
    keep = len(data.rstrip()) // 2  # inside the JSON (a cursor's slot is padded with spaces)
    if how == "truncated":
        path.write_bytes(data[:keep])
    elif how == "zero-filled tail":
        path.write_bytes(data[:keep] + bytes(len(data) - keep))
    elif how == "zeros":
        path.write_bytes(bytes(len(data)))
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(os.urandom(len(data)) + b"\xff")
    elif how == "not an object":
        path.write_text("[1, 2, 3]")
    elif how == "foreign":  # a later logbridge with another format: readable JSON that must not be trusted
        obj = json.loads(data)
        path.write_text(json.dumps({**obj, statefiles.FORMAT_KEY: statefiles.FORMAT + 1}))
    else:
        raise AssertionError(how)


DAMAGES = ["truncated", "zero-filled tail", "zeros", "empty", "garbage", "not an object", "foreign"]


@pytest.fixture(autouse=True)
def fresh_counts(monkeypatch):
    monkeypatch.setattr(statefiles, "recovered", Counter(), raising=False)


@pytest.mark.parametrize("how", DAMAGES)
def test_a_damaged_state_file_is_refused_set_aside_logged_once_and_counted(tmp_path, how, caplog):
    path = tmp_path / "totals.json"
    path.write_text(json.dumps(statefiles.versioned({"containers": {"lines_written": 5}})))
    assert statefiles.load(str(path))["containers"] == {"lines_written": 5}
    damage(path, how)
    with pytest.raises(statefiles.StateUnreadable) as caught:
        statefiles.load(str(path))
    assert caught.value.problem == ("foreign" if how == "foreign" else "corrupt")
    with caplog.at_level(logging.INFO, logger="driver.statefiles"):
        statefiles.set_aside(caught.value, "totals.json", "starting from zero")
    assert not path.exists() and (tmp_path / "totals.json.bad").exists()
    assert statefiles.load(str(path)) is None  # the next start does not meet it again
    assert statefiles.recovered == {("totals.json", caught.value.problem): 1}
    [record] = [r for r in caplog.records if r.name == "driver.statefiles"]
    assert "starting from zero" in record.getMessage() and record.path == str(path)


def test_a_file_of_an_older_version_without_format_key_is_read():
    assert statefiles.parse("x", b'{"pos": 7}') == {"pos": 7}


def saved_cursor(tmp_path: Path, pos: int = 4000) -> Path:
    store = CursorStore(str(tmp_path))
    cursor = store.load("forward")
    cursor.pos = pos
    store.save(cursor)
    store.close()
    return tmp_path / "forward.json"


@pytest.mark.parametrize("how", DAMAGES)
def test_a_damaged_output_cursor_starts_again_at_the_oldest_segment(tmp_path, how):
    path = saved_cursor(tmp_path)
    assert len(path.read_bytes()) == CursorStore.SLOT and b'"format": 1' in path.read_bytes()
    damage(path, how)
    cursor = CursorStore(str(tmp_path)).load("forward")
    # at 0: every sink moves a cursor before the oldest segment to the journal's start, and sends from there
    assert cursor.pos == 0 and cursor.recovered
    assert (tmp_path / "forward.json.bad").exists()
    assert sum(statefiles.recovered.values()) == 1


def test_a_cursor_past_the_journal_end_comes_back_to_the_end(tmp_path):
    path = saved_cursor(tmp_path, pos=4000)
    cursor = CursorStore(str(tmp_path), journal_end=1500).load("forward")
    assert cursor.pos == 1500 and not cursor.recovered and path.exists()
    assert statefiles.recovered == {("cursor", "past_journal_end"): 1}


@pytest.mark.parametrize("how", DAMAGES)
def test_a_damaged_json_log_cursor_resumes_after_json_logs_last_line(tmp_path, how, monkeypatch):
    monkeypatch.setattr(jsonlog, "SAVE_INTERVAL", 1e9)  # only the explicit saves
    a = writer(tmp_path)
    a.journal.write(frames(0, 100))
    drain(a)
    a.flush()
    a.journal.write(frames(100, 50))
    drain(a)  # json.log holds 150 lines, the cursor says 100: a kill now
    a.flush()
    damage(tmp_path / "cursors" / "jsonlog.json", how)
    b = writer(tmp_path)  # the restarted plugin
    b.journal.write(frames(150, 20))
    drain(b)
    assert all_numbers(tmp_path) == list(range(170))  # nothing lost, nothing twice
    assert sum(statefiles.recovered.values()) == 1


def test_a_damaged_json_log_cursor_with_json_log_lost_too_replays_the_journal(tmp_path):
    a = writer(tmp_path)
    a.journal.write(frames(0, 100))
    drain(a)
    a.flush()
    damage(tmp_path / "cursors" / "jsonlog.json", "zeros")
    (tmp_path / "logs" / "c-json.log").write_bytes(b"")  # its blocks never reached the disk either
    b = writer(tmp_path)
    drain(b)
    assert all_numbers(tmp_path) == list(range(100))


def test_a_journal_that_lost_its_tail_takes_new_lines_where_the_cursor_now_points(tmp_path, monkeypatch):
    """A power cut: the json.log cursor's slot reached the disk, the journal's last pages did not."""
    monkeypatch.setattr(jsonlog, "SAVE_INTERVAL", 1e9)
    a = writer(tmp_path)
    a.journal.write(frames(0, 100))
    drain(a)
    a.flush()
    a.journal.close()
    [segment] = (tmp_path / "journal").glob("*.seg")  # beside it: the incarnation file
    os.truncate(segment, segment.stat().st_size // 2)  # inside a frame
    journal = Journal(str(tmp_path / "journal"))
    b = jsonlog.JsonLogWriter(journal, CursorStore(str(tmp_path / "cursors"), journal.end),
                              str(tmp_path / "logs" / "c-json.log"), None, 50, False, None, ContainerStats("c"))
    journal.write(frames(100, 30))
    drain(b)
    assert all_numbers(tmp_path) == list(range(130))


def test_a_segment_that_lost_its_tail_does_not_stop_its_readers(tmp_path):
    """A power cut took the tail of a segment that is not the last: readers skip the gap (counted as garbage)
    instead of waiting for bytes that never come."""
    journal = Journal(str(tmp_path / "journal"), segment_bytes=4000)
    journal.write(frames(0, 1000))  # ~20 KB: several segments
    journal.close()
    segments = sorted((tmp_path / "journal").iterdir())
    assert len(segments) > 3
    os.truncate(segments[1], 1000)
    (tmp_path / "journal" / "junk.seg").write_bytes(b"not ours")
    journal = Journal(str(tmp_path / "journal"), segment_bytes=4000)
    assert (tmp_path / "journal" / "junk.seg.bad").exists()
    w = jsonlog.JsonLogWriter(journal, CursorStore(str(tmp_path / "cursors")), str(tmp_path / "logs" / "c-json.log"),
                              None, 50, False, None, ContainerStats("c"))
    drain(w)
    got = all_numbers(tmp_path)
    assert got[-1] == 999 and got == sorted(set(got))  # to the end, in order, nothing twice
    assert 1000 - len(got) < 250  # only the gap's lines (segment 1's missing 3 KB, ~60 lines, and a torn frame)
    assert statefiles.recovered == {("journal segment", "short"): 1, ("journal segment", "corrupt"): 1}


def test_a_journal_that_lost_the_frames_json_log_holds_keeps_json_logs_lines(tmp_path, monkeypatch):
    """A power cut after json.log got lines past its saved size: the journal lost its tail, json.log did not.
    Cutting json.log back to the saved size and replaying would lose the lines the journal no longer holds."""
    monkeypatch.setattr(jsonlog, "SAVE_INTERVAL", 1e9)
    a = writer(tmp_path)
    a.journal.write(frames(0, 100))
    drain(a)
    a.flush()  # saved: 100 lines
    a.journal.write(frames(100, 50))
    drain(a)  # json.log: 150 lines, not saved
    a.journal.close()
    [segment] = (tmp_path / "journal").glob("*.seg")  # beside it: the incarnation file
    os.truncate(segment, len(frames(0, 120)) + 3)  # the journal kept 120 frames and a torn one
    journal = Journal(str(tmp_path / "journal"))
    b = jsonlog.JsonLogWriter(journal, CursorStore(str(tmp_path / "cursors"), journal.end),
                              str(tmp_path / "logs" / "c-json.log"), None, 50, False, None, ContainerStats("c"))
    journal.write(frames(150, 30))
    drain(b)
    assert all_numbers(tmp_path) == list(range(180))
    assert statefiles.recovered == {("journal segment", "behind_json_log"): 1}


def test_a_journal_ending_in_zero_filled_pages_takes_new_lines_after_them(tmp_path):
    """A power cut: the journal's size reached the disk, its last page did not (zeros from inside a frame on).
    The pipeline cuts the zeros once its consumers are loaded; lines appended later are not held back."""
    journal = Journal(str(tmp_path / "journal"))
    old = frames(0, 200)
    journal.write(old[: len(old) * 2 // 3] + bytes(len(old) - len(old) * 2 // 3))
    w = jsonlog.JsonLogWriter(journal, CursorStore(str(tmp_path / "cursors"), journal.end),
                              str(tmp_path / "logs" / "c-json.log"), None, 50, False, None, ContainerStats("c"))
    assert journal.cut_zero_tail() > 0
    drain(w)
    journal.write(frames(200, 100))
    drain(w)
    got = all_numbers(tmp_path)
    assert got[-100:] == list(range(200, 300)) and got == sorted(set(got))
    assert statefiles.recovered == {("journal segment", "zero_tail"): 1}


def test_zeros_inside_a_frame_are_kept(tmp_path):
    """A line of NULs at the journal's end is data, not a lost page."""
    journal = Journal(str(tmp_path / "journal"))
    journal.write(frames(0, 10) + encode_entry(("stdout", 1, bytes(5000), False, False, "", 0)))
    end = journal.end
    assert journal.cut_zero_tail() == 0 and journal.end == end
