"""The json.log writer's crash windows: a kill at any point replays the journal into json.log with no line lost,
torn or doubled. A 'kill' here is dropping the writer without flush(), then building a new one on the same files,
as a restarted plugin does."""

from __future__ import annotations

import os
from pathlib import Path

from driver.frames import encode_entry
from driver.journal import CursorStore, Journal
from driver.jsonfile import decode_line
from driver.sinks.jsonlog import JsonLogWriter
from driver.stats import ContainerStats


def frames(first: int, n: int) -> bytes:
    return b"".join(encode_entry(("stdout", 10**18 + i, b"%05d" % i, False, False, "", 0))
                    for i in range(first, first + n))


def writer(tmp: Path, max_size: int | None = None, max_file: int = 50) -> JsonLogWriter:
    journal = Journal(str(tmp / "journal"))
    return JsonLogWriter(journal, CursorStore(str(tmp / "cursors")), str(tmp / "logs" / "c-json.log"),
                         max_size, max_file, False, None, ContainerStats("c"))


def all_numbers(tmp: Path) -> list[int]:
    logs = tmp / "logs"
    rotated = sorted(logs.glob("c-json.log.*"), key=lambda p: -int(p.name.rsplit(".", 1)[1]))
    out = []
    for f in [*rotated, logs / "c-json.log"]:
        out += [int(decode_line(raw)[0]) for raw in f.read_bytes().splitlines(keepends=True)]
    return out


def drain(w: JsonLogWriter) -> None:
    while w.pump():
        pass


def test_kill_after_the_first_batch_before_any_periodic_save(tmp_path):
    a = writer(tmp_path)
    a.journal.write(frames(0, 100))
    drain(a)  # written, and no periodic save yet (it comes after SAVE_INTERVAL)
    b = writer(tmp_path)  # the restarted plugin
    b.journal.write(frames(100, 50))
    drain(b)
    assert all_numbers(tmp_path) == list(range(150))


def test_kill_right_after_a_rotation_inside_a_batch(tmp_path):
    a = writer(tmp_path, max_size=2000)
    a.flush()
    a.journal.write(frames(0, 300))  # one batch that crosses several rotations
    drain(a)
    b = writer(tmp_path, max_size=2000)
    drain(b)
    assert all_numbers(tmp_path) == list(range(300))
    assert b.stats.lines_written == 300  # the counts come back consistent with the replay


def test_torn_last_line_is_cut_back(tmp_path):
    a = writer(tmp_path)
    a.journal.write(frames(0, 10))
    drain(a)
    a.flush()
    with open(tmp_path / "logs" / "c-json.log", "ab") as f:
        f.write(b'{"log":"torn')  # a write the kill interrupted
    b = writer(tmp_path)
    b.journal.write(frames(10, 5))
    drain(b)
    assert all_numbers(tmp_path) == list(range(15))


def test_full_disk_during_a_replay_neither_loses_nor_doubles(tmp_path):
    import errno

    import pytest

    a = writer(tmp_path, max_size=2000)
    a.flush()
    a.journal.write(frames(0, 300))
    drain(a)  # rotations inside the batch: the replay below starts with entries to leave out
    b = writer(tmp_path, max_size=2000)
    real = b.logfile.write_lines
    calls = []

    def full_once(lines):
        calls.append(len(lines))
        if len(calls) == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(lines)

    b.logfile.write_lines = full_once
    with pytest.raises(OSError):
        b.pump()
    drain(b)  # room again
    assert all_numbers(tmp_path) == list(range(300))
    assert b.stats.lines_written == 300 and b.stats.received_lines["stdout"] == 300


def test_a_torn_frame_claiming_more_than_a_batch_does_not_hold_back_the_lines_after_it(tmp_path):
    # A crash can leave a frame header whose length (here 400 kB, under MAX_FRAME) runs over the lines that
    # follow: the writer must read far enough to see it is garbage, not wait for the container to stop.
    torn = (400_000).to_bytes(4, "big") + b"\x0a\x06stdout" + b"\x00" * 100
    a = writer(tmp_path)
    a.journal.write(frames(0, 10) + torn + frames(10, 30_000))  # ~800 kB after the torn header
    drain(a)
    assert all_numbers(tmp_path) == list(range(30_010))
    assert a.stats.dropped_lines["garbled_frame"] == 1  # counted as one incident


def test_a_saved_position_the_journal_no_longer_holds_still_cuts_json_log_back(tmp_path, monkeypatch):
    import driver.sinks.jsonlog as jsonlog

    monkeypatch.setattr(jsonlog, "SAVE_INTERVAL", 1e9)  # only the explicit save below
    journal = Journal(str(tmp_path / "journal"), segment_bytes=16 << 10)
    a = JsonLogWriter(journal, CursorStore(str(tmp_path / "cursors")), str(tmp_path / "logs" / "c-json.log"),
                      None, 1, False, None, ContainerStats("c"))
    journal.write(frames(0, 1000))
    drain(a)
    a.flush()  # saved: 1000 lines
    journal.write(frames(1000, 3000))
    drain(a)  # written, not saved
    journal.release(journal.end)  # the segments from the saved position on are gone (the cap, json.log's disk full)
    assert journal.start > a.saved_pos
    journal = Journal(str(tmp_path / "journal"), segment_bytes=16 << 10)  # the restarted plugin
    b = JsonLogWriter(journal, CursorStore(str(tmp_path / "cursors")), str(tmp_path / "logs" / "c-json.log"),
                      None, 1, False, None, ContainerStats("c"))
    drain(b)
    got = all_numbers(tmp_path)
    assert got == sorted(set(got)), "lines doubled or out of order"
    assert got[:1000] == list(range(1000)) and got[-1] == 3999
    assert b.stats.lines_written == len(got)  # the saved counts came back, and the replay added to them


def fail_nth_write(w: JsonLogWriter, n: int, err: int, partial: bool = True, times: int = 1) -> list:
    """Make the ``n``th (1-based) write() of json.log bytes fail with ``err`` (``times`` times in a row), after
    half of its bytes reached the file when ``partial``: a torn write, as a failing disk leaves it."""
    real = w.logfile._write
    calls = []

    def write(data: bytes) -> None:
        calls.append(len(data))
        if n <= len(calls) < n + times:
            if partial:
                real(data[: len(data) // 2])
            raise OSError(err, os.strerror(err))
        real(data)

    w.logfile._write = write
    return calls


def test_an_io_error_rewinds_the_batch_counts_it_and_logs_once(tmp_path, caplog):
    import errno

    import pytest

    a = writer(tmp_path)
    a.journal.write(frames(0, 100))
    fail_nth_write(a, 1, errno.EIO, times=2)
    for _ in range(2):
        with pytest.raises(OSError):
            a.pump()
    drain(a)  # the disk works again
    assert all_numbers(tmp_path) == list(range(100))  # no line lost, no torn line kept
    assert a.stats.write_errors == 2
    assert a.stats.lines_written == 100
    failed = [r for r in caplog.records if "json.log write failed" in r.getMessage()]
    assert len(failed) == 1


def test_a_read_only_file_system_that_cannot_cut_the_torn_write_cuts_it_later(tmp_path):
    import errno

    import pytest

    a = writer(tmp_path)
    a.journal.write(frames(0, 50))
    fail_nth_write(a, 1, errno.EROFS)  # half a batch reached the file
    real_truncate = a.logfile.truncate_to

    def read_only(size):
        a.logfile.truncate_to = real_truncate
        raise OSError(errno.EROFS, "Read-only file system")

    a.logfile.truncate_to = read_only  # nor can the torn half be cut right away
    with pytest.raises(OSError):
        a.pump()
    drain(a)  # writable again
    assert all_numbers(tmp_path) == list(range(50))


def test_a_full_disk_after_a_rotation_inside_the_batch_neither_pads_nor_doubles(tmp_path):
    import errno

    import pytest

    a = writer(tmp_path, max_size=2000)
    a.journal.write(frames(0, 300))
    fail_nth_write(a, 2, errno.ENOSPC)  # the first write fills json.log up to max-size; the second follows a rotation
    with pytest.raises(OSError):
        a.pump()
    assert b"\0" not in (tmp_path / "logs" / "c-json.log").read_bytes()
    drain(a)
    assert all_numbers(tmp_path) == list(range(300))
    assert a.stats.lines_written == 300


def test_a_batch_the_cap_gives_up_while_the_disk_is_full_is_counted(tmp_path):
    import errno

    import pytest

    journal = Journal(str(tmp_path / "journal"), segment_bytes=16 << 10, max_bytes=32 << 10)
    a = JsonLogWriter(journal, CursorStore(str(tmp_path / "cursors")), str(tmp_path / "logs" / "c-json.log"),
                      None, 1, False, None, ContainerStats("c"))
    n = 3000  # ~90 kB of frames: several segments, more than the cap
    journal.write(frames(0, n))
    real = a.logfile.write_lines

    def full_while_the_cap_runs(lines):
        for name, frames_lost, nbytes in journal.enforce_cap(None):  # as Pipeline._enforce_cap does, disk full
            if name == a.name:
                a.stats.dropped("journal_cap", frames_lost, nbytes)
        a.logfile.write_lines = real
        raise OSError(errno.ENOSPC, "No space left on device")

    a.logfile.write_lines = full_while_the_cap_runs
    with pytest.raises(OSError):
        a.pump()
    drain(a)
    written = all_numbers(tmp_path)
    assert written == sorted(set(written))
    assert len(written) == a.stats.lines_written
    # every line is in json.log or counted as dropped
    assert a.stats.lines_written + a.stats.dropped_lines["journal_cap"] == n


def test_a_full_log_disk_still_takes_the_lines_that_fit(tmp_path):
    import errno
    import subprocess

    import pytest

    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    small = tmp_path / "logs"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(small)], check=True)
    try:
        a = writer(tmp_path)
        n = 20_000  # ~600 kB of frames, ~1.6 MB of json.log: far more than fits
        a.journal.write(frames(0, n))
        for _ in range(200):  # the pipeline retries every second; each try writes what fits
            try:
                if not a.pump():
                    break
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
        size = (small / "c-json.log").stat().st_size
        assert size > 400_000  # nearly the whole 512 kB (before: 0, the 256 KiB batch never fitted)
        got = all_numbers(tmp_path)
        assert got == list(range(len(got)))
        subprocess.run(["mount", "-o", "remount,size=8m", str(small)], check=True)  # room again
        drain(a)
        assert all_numbers(tmp_path) == list(range(n))
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


def test_json_log_shorter_than_its_cursor_is_replayed_from_its_last_whole_line(tmp_path):
    # A power cut: the cursor slot reached the disk, json.log's last blocks did not (here: cut inside line 9).
    a = writer(tmp_path, max_size=10**6)
    a.journal.write(frames(0, 20))
    drain(a)
    a.flush()
    path = tmp_path / "logs" / "c-json.log"
    raw = path.read_bytes()
    cut = raw.index(b"00009") + 3
    os.truncate(path, cut)
    b = writer(tmp_path, max_size=10**6)
    b.journal.write(frames(20, 5))
    drain(b)
    assert b"\0" not in path.read_bytes()
    assert all_numbers(tmp_path) == list(range(25))
    assert b.stats.lines_written == 25  # the replayed lines are not counted twice
    assert b.stats.received_lines["stdout"] == 25


def test_resuming_at_a_segment_start_inside_a_frame_is_not_a_garbled_frame(tmp_path, monkeypatch):
    import driver.sinks.jsonlog as jsonlog

    monkeypatch.setattr(jsonlog, "SAVE_INTERVAL", 1e9)
    journal = Journal(str(tmp_path / "journal"), segment_bytes=16 << 10)
    JsonLogWriter(journal, CursorStore(str(tmp_path / "cursors")), str(tmp_path / "logs" / "c-json.log"),
                  None, 1, False, None, ContainerStats("c"))  # saves its cursor at 0
    journal.write(frames(0, 3000))  # segment starts fall inside frames
    journal.release(journal.end)  # the segments json.log's saved position (0) pointed into are gone
    assert journal.start > 0
    b = JsonLogWriter(Journal(str(tmp_path / "journal"), segment_bytes=16 << 10),
                      CursorStore(str(tmp_path / "cursors")), str(tmp_path / "logs" / "c-json.log"),
                      None, 1, False, None, ContainerStats("c"))
    drain(b)
    got = all_numbers(tmp_path)
    assert got == list(range(got[0], 3000))
    assert b.stats.dropped_lines["garbled_frame"] == 0  # the cut frame is part of the gap, not garbage
    assert b.stats.dropped_bytes["journal_cap"] > 0
