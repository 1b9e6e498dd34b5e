"""driver.logfile on real files: rotation as json-file does it, compression, crash leftovers, reading, follow."""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from driver import logfile
from driver.jsonfile import encode_entries, format_time, parse_time
from driver.logfile import Follower, LogFile, ReadStats, list_files, read_entries
from tests.support.procs import wait_for

T0 = parse_time("2026-11-26T13:49:51.97266558Z")
MS = 1_000_000
DOCKER = Path(__file__).parent / "data" / "jsonfile"


def t(i: int) -> int:
    return T0 + i * MS


def lines(start: int, stop: int) -> list[bytes]:
    """json-file lines `line <i>`, one millisecond apart: about 75 bytes each."""
    return encode_entries([("stdout", t(i), b"line %d" % i, False, False, "", 0) for i in range(start, stop)], None)


def entries(start: int, stop: int) -> list[tuple[bytes, str, int]]:
    return [(b"line %d\n" % i, "stdout", t(i)) for i in range(start, stop)]


def files_as_json_file_would(written: list[bytes], max_size: int, max_file: int) -> list[bytes]:
    """The contents json-file leaves, oldest first: rotate before an entry once the file holds >= max_size."""
    files: list[list[bytes]] = [[]]
    size = 0
    for line in written:
        if size >= max_size:
            files.append([])
            size = 0
        files[-1].append(line)
        size += len(line)
    return [b"".join(f) for f in files[-max_file:]]


def contents(path: Path, names: list[str]) -> list[bytes]:
    out = []
    for name in names:
        data = (path.parent / name).read_bytes()
        out.append(gzip.decompress(data) if name.endswith(".gz") else data)
    return out


def gzip_extra(path: Path) -> bytes:
    """The FEXTRA field of a gzip file's header, read by hand (RFC 1952)."""
    header = path.read_bytes()[:12]
    assert header[:4] == b"\x1f\x8b\x08\x04", header  # deflate, FEXTRA and nothing else
    (xlen,) = struct.unpack("<H", header[10:12])
    return path.read_bytes()[12 : 12 + xlen]


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "containers" / "c" / "c-json.log"


@pytest.fixture
def private_ext4(tmp_path: Path):
    """A small ext4 on which only the test creates files: a freed inode number goes to the next file made there,
    at once and every time, as it does by chance on a host's busy ext4."""
    if os.geteuid() != 0 or shutil.which("mkfs.ext4") is None:
        pytest.skip("a loop-mounted ext4 needs root and mkfs.ext4")
    image, mnt = tmp_path / "ext4.img", tmp_path / "ext4"
    mnt.mkdir()
    with open(image, "wb") as f:
        f.truncate(16 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def names(log_path: Path) -> list[str]:
    return sorted(p.name for p in log_path.parent.iterdir())


# --- writer --------------------------------------------------------------------------------------------


def test_appends_and_reopens(log_path: Path):
    w = LogFile(str(log_path), None, 1, False)
    w.write_lines(lines(0, 3))
    w.close()
    w = LogFile(str(log_path), None, 1, False)
    assert w.size == len(b"".join(lines(0, 3)))
    w.write_lines(lines(3, 5))
    assert w.inode() == log_path.stat().st_ino
    w.close()
    assert log_path.read_bytes() == b"".join(lines(0, 5))


def test_modes_do_not_depend_on_umask(log_path: Path):
    old = os.umask(0o077)
    try:
        LogFile(str(log_path), 200, 3, True).close()
    finally:
        os.umask(old)
    assert log_path.stat().st_mode & 0o777 == 0o640
    assert log_path.parent.stat().st_mode & 0o777 == 0o755
    assert log_path.parent.parent.stat().st_mode & 0o777 == 0o755


@pytest.mark.parametrize("batch", [1, 7, 1000])
def test_rotation_matches_json_file(log_path: Path, batch: int):
    written = lines(0, 100)
    w = LogFile(str(log_path), 1000, 3, False)
    for i in range(0, len(written), batch):
        w.write_lines(written[i : i + batch])
    w.close()
    assert names(log_path) == ["c-json.log", "c-json.log.1", "c-json.log.2"]
    expected = files_as_json_file_would(written, 1000, 3)
    assert contents(log_path, ["c-json.log.2", "c-json.log.1", "c-json.log"]) == expected
    for data in expected[:-1]:
        assert 1000 <= len(data) < 1000 + max(map(len, written))  # over max-size by at most one entry


def test_one_write_per_run_between_rotations(log_path: Path, monkeypatch: pytest.MonkeyPatch):
    w = LogFile(str(log_path), 1000, 5, False)
    writes = []
    real_write = os.write
    monkeypatch.setattr(logfile.os, "write", lambda fd, data: writes.append(len(data)) or real_write(fd, data))
    w.write_lines(lines(0, 30))  # about 2200 bytes: two rotations
    w.close()
    assert len(writes) == 3
    assert sum(writes) == len(b"".join(lines(0, 30)))


def test_max_file_1_unlinks_the_full_file(log_path: Path):
    w = LogFile(str(log_path), 300, 1, False)
    w.write_lines(lines(0, 20))
    w.close()
    assert names(log_path) == ["c-json.log"]
    assert log_path.read_bytes() == files_as_json_file_would(lines(0, 20), 300, 1)[0]


def test_compression_with_last_time_in_gzip_header(log_path: Path):
    written = lines(0, 100)
    w = LogFile(str(log_path), 1000, 3, True)
    w.write_lines(written)
    w.close()  # waits for the compression of the last rotation
    assert names(log_path) == ["c-json.log", "c-json.log.1.gz", "c-json.log.2.gz"]
    expected = files_as_json_file_would(written, 1000, 3)
    assert contents(log_path, ["c-json.log.2.gz", "c-json.log.1.gz", "c-json.log"]) == expected
    for name, data in [("c-json.log.2.gz", expected[0]), ("c-json.log.1.gz", expected[1])]:
        last = data.splitlines()[-1]
        last_time = last[last.rindex(b'"time":"') + 8 : -2]
        assert gzip_extra(log_path.parent / name) == b'{"lastTime":"' + last_time + b'"}'
        assert (log_path.parent / name).stat().st_mode & 0o777 == 0o640


def test_gzip_header_like_docker(log_path: Path):
    w = LogFile(str(log_path), 100, 2, True)
    w.write_lines(lines(0, 3))
    w.close()
    ours = (log_path.parent / "c-json.log.1.gz").read_bytes()
    docker = (DOCKER / "rot" / "c-json.log.1.gz").read_bytes()
    assert ours[:10] == docker[:10] == b"\x1f\x8b\x08\x04\x00\x00\x00\x00\x00\xff"  # MTIME 0, XFL 0, OS 255


def test_on_rotate_phases(log_path: Path):
    seen = []

    def on_rotate(phase: str, lines_done: int) -> None:
        rotated = log_path.with_name("c-json.log.1")
        seen.append((phase, lines_done, log_path.stat().st_size, rotated.exists() and rotated.stat().st_size))

    w = LogFile(str(log_path), 100, 3, False, on_rotate=on_rotate)
    w.write_lines(lines(0, 1))
    first = w.size
    w.write_lines(lines(1, 4))  # the second line fills the file past 100 bytes: rotation before the third
    w.close()
    second = first + len(lines(1, 2)[0])
    assert seen == [("before", 1, second, False), ("after", 1, 0, second)]
    assert log_path.read_bytes() == b"".join(lines(2, 4))


def test_truncate_to(log_path: Path):
    w = LogFile(str(log_path), None, 1, False)
    w.write_lines(lines(0, 2))
    keep = len(lines(0, 1)[0])
    w.write_lines([b'{"log":"torn'])
    w.truncate_to(keep)
    w.write_lines(lines(5, 6))
    w.close()
    assert log_path.read_bytes() == lines(0, 1)[0] + lines(5, 6)[0]


def test_finishes_work_a_crash_interrupted(log_path: Path):
    log_path.parent.mkdir(parents=True)
    log_path.with_name("c-json.log.1").write_bytes(b"".join(lines(10, 20)))  # rotated, never compressed
    log_path.with_name("c-json.log.2").write_bytes(b"".join(lines(0, 10)))
    log_path.with_name("c-json.log.2.gz").write_bytes(b"\x1f\x8b truncated")  # 20.10 writes .gz in place
    log_path.with_name("c-json.log.3.gz.tmp").write_bytes(b"half")
    LogFile(str(log_path), 1000, 4, True).close()
    assert names(log_path) == ["c-json.log", "c-json.log.1.gz", "c-json.log.2.gz"]
    assert contents(log_path, ["c-json.log.2.gz", "c-json.log.1.gz"]) == [
        b"".join(lines(0, 10)),
        b"".join(lines(10, 20)),
    ]
    assert gzip_extra(log_path.with_name("c-json.log.1.gz")) == b'{"lastTime":"' + format_time(t(19)) + b'"}'


def test_failed_compression_keeps_the_file_readable_and_in_order(log_path: Path, monkeypatch: pytest.MonkeyPatch):
    real = logfile._compress_file
    calls = []

    def fail_first(name: str, mode: int) -> None:
        calls.append(name)
        if len(calls) == 1:
            raise OSError("disk full")
        real(name, mode)

    monkeypatch.setattr(logfile, "_compress_file", fail_first)
    w = LogFile(str(log_path), 1000, 4, True)
    w.write_lines(lines(0, 40))  # two rotations: the first compression fails
    w.close()
    assert names(log_path) == ["c-json.log", "c-json.log.1.gz", "c-json.log.2"]
    assert list(read_entries(str(log_path), tail=-1, since_ns=None, until_ns=None)) == entries(0, 40)


def test_current_file_removed_behind_our_back(log_path: Path):
    w = LogFile(str(log_path), 100, 3, False)
    w.write_lines(lines(0, 2))
    log_path.unlink()
    w.write_lines(lines(2, 3))  # rotation finds nothing to rename and starts a new file
    w.close()
    w.close()
    assert names(log_path) == ["c-json.log"]
    assert log_path.read_bytes() == lines(2, 3)[0]


@pytest.mark.parametrize(
    ("max_size", "max_file", "compress"), [(0, 1, False), (None, 0, False), (None, 2, True), (100, 1, True)]
)
def test_rejects_what_json_file_rejects(log_path: Path, max_size: int | None, max_file: int, compress: bool):
    with pytest.raises(ValueError):
        LogFile(str(log_path), max_size, max_file, compress)


# --- reading -------------------------------------------------------------------------------------------


def test_list_files(tmp_path: Path):
    for name in ["c.log", "c.log.1", "c.log.1.gz", "c.log.2.gz", "c.log.10.gz", "c.log.3.gz.tmp", "c.log.x", "d.log.1"]:
        (tmp_path / name).write_bytes(b"")
    path = str(tmp_path / "c.log")
    assert list_files(path, compress=True) == [path + ".10.gz", path + ".2.gz", path + ".1", path]
    assert list_files(path, compress=False) == [path + ".1", path]
    assert list_files(str(tmp_path / "none" / "c.log"), compress=True) == []


@pytest.fixture
def rotated_log(log_path: Path) -> Path:
    """Lines 0..99 written with max-size 1000, max-file 4, compress: `.3.gz .2.gz .1.gz current` remain."""
    w = LogFile(str(log_path), 1000, 4, True)
    w.write_lines(lines(0, 100))
    w.close()
    assert names(log_path) == ["c-json.log", "c-json.log.1.gz", "c-json.log.2.gz", "c-json.log.3.gz"]
    return log_path


def first_kept(path: Path) -> int:
    """The number of the oldest line still stored."""
    oldest = gzip.decompress(path.with_name("c-json.log.3.gz").read_bytes())
    return int(oldest.split(b"line ", 1)[1].split(b"\\n", 1)[0])


def read(path: Path, tail: int = -1, since: int | None = None, until: int | None = None, stats=None):
    return list(read_entries(str(path), tail=tail, since_ns=since, until_ns=until, stats=stats))


def test_read_all(rotated_log: Path):
    assert read(rotated_log) == entries(first_kept(rotated_log), 100)


@pytest.mark.parametrize("tail", [0, 1, 5, 20, 40, 1000])
@pytest.mark.parametrize("block", [7, 100, 64 * 1024])
def test_tail(rotated_log: Path, tail: int, block: int, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(logfile, "_READ_BLOCK", block)
    assert read(rotated_log, tail=tail) == entries(max(first_kept(rotated_log), 100 - tail), 100)[: tail or 0]


def test_tail_does_not_read_older_files(rotated_log: Path):
    for gz in rotated_log.parent.glob("*.gz"):
        gz.write_bytes(b"not gzip")  # reading one would lose lines with a warning
    stats = ReadStats()
    assert read(rotated_log, tail=3, stats=stats) == entries(97, 100)
    assert stats.bytes_read < 2 * rotated_log.stat().st_size


def keep_gzip_header_only(path: Path) -> None:
    """Cut a .gz file after its header: reading its body would fail, so a correct read proves it skipped it."""
    path.write_bytes(path.read_bytes()[: 12 + len(gzip_extra(path))] + b"garbage")


def test_since_skips_whole_files(rotated_log: Path):
    for gz in rotated_log.parent.glob("*.gz"):
        keep_gzip_header_only(gz)
    stats = ReadStats()
    assert read(rotated_log, since=t(99), stats=stats) == entries(99, 100)
    assert stats.bad_lines == 0
    assert stats.bytes_read < 3 * rotated_log.stat().st_size + 3 * 64  # gzip headers, current file


def test_tail_and_since(rotated_log: Path):
    assert read(rotated_log, tail=50, since=t(95)) == entries(95, 100)
    assert read(rotated_log, tail=3, since=t(50)) == entries(97, 100)


def test_since_reads_uncompressed_rotated_files_as_json_file_does(log_path: Path):
    # A plain file's last line says nothing about the lines before it once the clock stepped back: read them.
    w = LogFile(str(log_path), 5000, 3, False)
    w.write_lines(lines(0, 200))
    w.close()
    rotated = sum(log_path.with_name(n).stat().st_size for n in ["c-json.log.1", "c-json.log.2"])
    stats = ReadStats()
    assert read(log_path, since=t(199), stats=stats) == entries(199, 200)
    assert stats.bytes_read >= rotated


def test_until_ends_the_read(rotated_log: Path):
    start = first_kept(rotated_log)
    assert read(rotated_log, until=t(start + 4)) == entries(start, start + 5)
    assert read(rotated_log, since=t(90), until=t(92)) == entries(90, 93)
    assert read(rotated_log, tail=5, until=t(97)) == entries(95, 98)


def test_reads_what_json_file_wrote(tmp_path: Path):
    for kind, compress in [("rot", True), ("rotplain", False)]:
        shutil.copytree(DOCKER / kind, tmp_path / kind)
        path = tmp_path / kind / "c-json.log"
        got = list(read_entries(str(path), tail=-1, since_ns=None, until_ns=None, compress=compress))
        logs = [e[0] for e in got]
        assert logs == [b"%d\n" % i for i in range(int(logs[0]), 121)]
        assert [e[0] for e in read_entries(str(path), tail=31, since_ns=None, until_ns=None)] == logs[-31:]


def test_docker_gzip_last_time_skips_the_file(tmp_path: Path):
    shutil.copytree(DOCKER / "rot", tmp_path / "rot")
    path = tmp_path / "rot" / "c-json.log"
    last_time = parse_time(gzip_extra(path.with_name("c-json.log.2.gz"))[13:-2])
    older = gzip.decompress(path.with_name("c-json.log.2.gz").read_bytes()).splitlines()
    assert last_time == parse_time(older[-1][older[-1].rindex(b'"time":"') + 8 : -2])
    keep_gzip_header_only(path.with_name("c-json.log.2.gz"))
    stats = ReadStats()
    got = list(read_entries(str(path), tail=-1, since_ns=last_time + 1, until_ns=None, stats=stats))
    newest_skipped = int(older[-1].split(b'"log":"', 1)[1].split(b"\\n", 1)[0])
    assert [e[0] for e in got] == [b"%d\n" % i for i in range(newest_skipped + 1, 121)]
    assert stats.bad_lines == 0


def test_rotation_while_opening_the_files(log_path: Path, monkeypatch: pytest.MonkeyPatch):
    w = LogFile(str(log_path), 300, 9, False)
    w.write_lines(lines(0, 10))
    real_open = logfile._open_source

    def rotate_first(name: str, stats: ReadStats):
        monkeypatch.setattr(logfile, "_open_source", real_open)
        w.write_lines(lines(10, 20))  # shifts every name once or twice
        return real_open(name, stats)

    monkeypatch.setattr(logfile, "_open_source", rotate_first)
    assert read(log_path) == entries(0, 20)
    w.close()


def test_torn_and_bad_lines(log_path: Path):
    w = LogFile(str(log_path), None, 1, False)
    w.write_lines(lines(0, 2) + [b"garbage\n"] + lines(2, 3) + [b'{"log":"torn'])
    w.close()
    stats = ReadStats()
    assert read(log_path, stats=stats) == entries(0, 3)
    assert stats.bad_lines == 1
    assert read(log_path, tail=1) == entries(2, 3)


def test_missing_log_reads_nothing(log_path: Path):
    assert read(log_path) == []


# --- follow --------------------------------------------------------------------------------------------


def test_history_then_new_lines(log_path: Path):
    w = LogFile(str(log_path), None, 1, False)
    w.write_lines(lines(0, 5))
    f = Follower(str(log_path))
    w.write_lines(lines(5, 7))  # after the snapshot: for poll(), not history()
    assert list(f.history(tail=3)) == entries(2, 5)
    assert f.poll() == entries(5, 7)
    assert f.poll() == []
    w.write_lines(lines(7, 8))
    assert f.poll() == entries(7, 8)
    f.close()
    w.close()


def test_follow_a_torn_write(log_path: Path):
    w = LogFile(str(log_path), None, 1, False)
    f = Follower(str(log_path))
    line = lines(0, 1)[0]
    w.write_lines([line[:10]])
    assert f.poll() == []
    w.write_lines([line[10:]])
    assert f.poll() == entries(0, 1)
    f.close()
    w.close()


@pytest.mark.parametrize("compress", [False, True])
def test_follow_across_rotations(log_path: Path, compress: bool):
    w = LogFile(str(log_path), 500, 3, compress)
    w.write_lines(lines(0, 3))
    f = Follower(str(log_path))
    assert list(f.history(tail=-1)) == entries(0, 3)
    got = []
    for i in range(3, 200, 4):
        w.write_lines(lines(i, i + 4))  # rotates every few batches, compression running meanwhile
        got += f.poll()
    got += f.poll()
    assert got == entries(3, 203)
    f.close()
    w.close()


@pytest.mark.parametrize("compress", [False, True])
def test_follow_several_rotations_between_polls(log_path: Path, compress: bool):
    w = LogFile(str(log_path), 500, 6, compress)
    f = Follower(str(log_path))
    w.write_lines(lines(0, 2))
    assert f.poll() == entries(0, 2)
    w.write_lines(lines(2, 30))  # about four rotations
    w.close()  # lets the last compression finish
    assert f.poll() == entries(2, 30)
    w = LogFile(str(log_path), 500, 6, compress)
    w.write_lines(lines(30, 45))
    assert f.poll() == entries(30, 45)
    f.close()
    w.close()


@pytest.mark.parametrize("compress", [False, True])
def test_follow_while_the_writer_rotates_flat_out(log_path: Path, compress: bool):
    """`docker logs -f` started while the writer rotates after every few lines (in another thread, as in the
    plugin): history and what follows hold every line once, in order, though each rotation renames every file."""
    padded = [line.replace(b'"log":"', b'"log":"' + b"x" * 600) for line in lines(0, 600)]
    for trial in range(3):
        path = log_path.with_name(f"trial{trial}-json.log")
        w = LogFile(str(path), 2048, 1000, compress)
        w.write_lines(padded[:200])
        writer = threading.Thread(target=lambda w=w: [w.write_lines(padded[i:i + 20]) for i in range(200, 600, 20)])
        writer.start()
        time.sleep(0.003 * trial)  # start reading at different points of the rotations
        f = Follower(str(path), compress=compress)
        got = list(f.history(tail=-1))
        while writer.is_alive():
            got += f.poll()
        writer.join()
        got += f.poll()
        assert [e[2] for e in got] == [t(i) for i in range(600)], f"trial {trial}"
        f.close()
        w.close()


def test_follow_when_the_left_file_s_inode_number_is_reused(private_ext4: Path, monkeypatch: pytest.MonkeyPatch):
    """Issues 11.1 and 15.9: the file the follower leaves was compressed already (its plain name unlinked), so
    closing it freed its inode number; two rotations later a new file holding that number sat at `.1` while the
    follower looked for the files rotated away since the one it left, and it took that file for the one it left:
    it never read `.1` nor `.2.gz`. Each write below of 7 lines (about 525 bytes) fills one file."""
    path = private_ext4 / "c" / "c-json.log"
    real_compress, compressions, release = logfile._compress_file, [], threading.Event()

    def compress(name: str, mode: int) -> None:
        compressions.append(name)
        if len(compressions) == 3:
            release.wait(10)  # the third rotated file stays plain at `.1` while the follower walks
        real_compress(name, mode)

    monkeypatch.setattr(logfile, "_compress_file", compress)
    w = LogFile(str(path), 500, 9, True)
    w.write_lines(lines(0, 7))  # file A
    f = Follower(str(path))
    got = list(f.history(tail=-1))
    w.write_lines(lines(7, 14))  # A -> .1 -> .1.gz; file B is the current one
    wait_for("A compressed", lambda: not path.with_name("c-json.log.1").exists(), timeout=10)
    real_enter = Follower._enter_current

    def two_rotations_before_entering(self: Follower) -> list[bytes]:
        # The follower has just left A, closing its last descriptor.
        monkeypatch.setattr(Follower, "_enter_current", real_enter)
        w.write_lines(lines(14, 21))  # B -> .1 -> .1.gz, then .2.gz; file C is created: A's inode number, if free
        w.write_lines(lines(21, 28))  # C -> .1 (held plain); file D is the current one
        return real_enter(self)

    monkeypatch.setattr(Follower, "_enter_current", two_rotations_before_entering)
    try:
        got += f.poll()
    finally:
        release.set()
    got += f.poll()
    assert [e[0] for e in got] == [e[0] for e in entries(0, 28)]
    f.close()
    w.close()


def test_follow_when_the_clock_stepped_back(log_path: Path):
    """Issue 15: a file written after the clock stepped back, compressed by the time the follower looks, has a
    last entry older than the left file's: it was taken for the left file or an older one, and never read."""
    back = 1000 * MS
    stepped_back = encode_entries(
        [("stdout", t(i) - back, b"line %d" % i, False, False, "", 0) for i in range(7, 14)], None)
    w = LogFile(str(log_path), 500, 9, True)
    w.write_lines(lines(0, 7))  # file A
    f = Follower(str(log_path))
    got = list(f.history(tail=-1))
    w.write_lines(stepped_back)  # A -> .1.gz; file B, 1 s back in time
    w.write_lines(lines(14, 21))  # B -> .1.gz, A -> .2.gz; the current file C
    w.close()  # both compressions done
    got += f.poll()
    assert [e[0] for e in got] == [e[0] for e in entries(0, 21)]
    f.close()


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_follow_closes_the_left_file(log_path: Path):
    """The file left at a rotation stays open until the next one is entered; close() closes it meanwhile too."""
    w = LogFile(str(log_path), None, 2, False)
    w.write_lines(lines(0, 3))
    before = open_fds()
    f = Follower(str(log_path))
    os.rename(log_path, log_path.with_name("c-json.log.1"))  # a rotation caught before the new file exists
    assert list(f.history(tail=-1)) + f.poll() == entries(0, 3)
    f.close()
    assert open_fds() == before
    w.close()


def test_follow_max_file_1(log_path: Path):
    w = LogFile(str(log_path), 300, 1, False)
    f = Follower(str(log_path))
    got = []
    for i in range(0, 40, 3):
        w.write_lines(lines(i, i + 3))
        got += f.poll()
    assert got == entries(0, 42)
    f.close()
    w.close()


def test_follow_before_the_file_exists(log_path: Path):
    f = Follower(str(log_path))
    assert list(f.history(tail=-1)) == []
    assert f.poll() == []
    w = LogFile(str(log_path), 500, 4, False)
    w.write_lines(lines(0, 20))  # rotated twice before the first look
    assert f.poll() == entries(0, 20)
    f.close()
    w.close()


def test_follow_since_and_until(log_path: Path):
    w = LogFile(str(log_path), None, 1, False)
    w.write_lines(lines(0, 5))
    f = Follower(str(log_path), since_ns=t(3), until_ns=t(7))
    assert list(f.history(tail=-1)) == entries(3, 5)
    w.write_lines(lines(5, 10))
    assert f.poll() == entries(5, 8)
    assert f.done
    w.write_lines(lines(10, 11))
    assert f.poll() == []
    f.close()
    w.close()


def test_follow_until_reached_in_history(log_path: Path):
    w = LogFile(str(log_path), None, 1, False)
    w.write_lines(lines(0, 5))
    f = Follower(str(log_path), until_ns=t(1))
    assert list(f.history(tail=-1)) == entries(0, 2)
    assert f.done
    w.write_lines(lines(5, 6))
    assert f.poll() == []
    f.close()
    w.close()


def test_rotated_files_are_told_apart_from_other_names_in_the_directory(tmp_path):
    # one pattern for every container (StartLogging compiled one per container): the names must still be exact
    path = tmp_path / "c-json.log"
    for name in ["c-json.log", "c-json.log.1", "c-json.log.2.gz", "c-json.log.3", "c-json.log.0", "c-json.log.1.2",
                 "c-json.log.", "c-json.logx.4", "xc-json.log.5", "c-json.log.6.gz.tmp", "c-json.log.7.gzip"]:
        (tmp_path / name).write_bytes(b"")
    assert [os.path.basename(p) for p in list_files(str(path), compress=True)] == [
        "c-json.log.3", "c-json.log.2.gz", "c-json.log.1", "c-json.log"]
    assert [os.path.basename(p) for p in list_files(str(path), compress=False)] == [
        "c-json.log.3", "c-json.log.1", "c-json.log"]
