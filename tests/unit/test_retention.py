"""driver.retention's size rule against a writer rotating at the same time (issue 15 point 6)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from driver import logfile
from driver.logfile import LogFile, read_entries
from driver.retention import Retention, RetentionPolicy
from tests.unit.test_logfile import entries, lines

CID = "c" * 64
FILE = 525  # bytes of 7 lines: one file at max-size 500


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "logs" / CID / f"{CID}-json.log"


def retention(path: Path, max_bytes: int) -> Retention:
    log_root = str(path.parent.parent)
    return Retention(log_root, str(path.parent.parent.parent / "state"), RetentionPolicy(0, max_bytes),
                     threading.Lock(), is_running=lambda cid: True)


def stored(path: Path) -> list[bytes]:
    return [e[0] for e in read_entries(str(path), tail=-1, since_ns=None, until_ns=None)]


def test_size_rule_removes_the_oldest_file_although_a_rotation_shifted_the_names(path, monkeypatch):
    w = LogFile(str(path), 500, 9, False)
    w.write_lines(lines(0, 21))  # .2: 0-6, .1: 7-13, current: 14-20
    os.utime(path.with_name(path.name + ".2"), (1, 1))  # the oldest by mtime, whatever the clock's resolution
    rule = retention(path, max_bytes=3 * FILE - 1)  # one file too many
    real_scan = Retention._scan

    def rotate_after_the_scan(self):
        scanned = real_scan(self)
        w.write_lines(lines(21, 28))  # .3: 0-6, .2: 7-13, .1: 14-20, current: 21-27
        return scanned

    monkeypatch.setattr(Retention, "_scan", rotate_after_the_scan)
    rule.sweep()
    assert stored(path) == [e[0] for e in entries(7, 28)]  # the oldest lines went, no hole
    assert rule.removed_files == 1
    w.close()


def test_size_rule_and_the_compressor_do_not_bring_a_removed_file_back(path, monkeypatch):
    real_write_gzip, copied, release = logfile._write_gzip, threading.Event(), threading.Event()

    def write_gzip_then_wait(src, dst, last_time):
        real_write_gzip(src, dst, last_time)
        copied.set()
        release.wait(10)  # the copy is made, the plain .1 not yet replaced by it

    monkeypatch.setattr(logfile, "_write_gzip", write_gzip_then_wait)
    w = LogFile(str(path), 500, 9, True)
    w.write_lines(lines(0, 14))  # .1: 0-6 (being compressed), current: 7-13
    try:
        assert copied.wait(10)
        retention(path, max_bytes=FILE).sweep()  # .1 must go
    finally:
        release.set()
    w.close()  # the compression ends
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    assert stored(path) == [e[0] for e in entries(7, 14)]
