"""The FIFO reader on a full disk: it never stops reading the pipe, never spins, stores what fits, drops only whole
frames and counts each dropped line by stream, and never leaves a torn frame in the journal.

The journal lives on a small tmpfs filled by a filler file: ENOSPC comes from the kernel, deterministically."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading

import pytest

from driver.fifo import PIPE_SIZE, FifoSource
from driver.frames import FrameDecoder, encode_entry
from driver.journal import Journal

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


def frame(i: int, size: int = 20, source: str = "stdout") -> bytes:
    return encode_entry((source, 10**18 + i, b"%0*d" % (size, i), False, False, "", 0))


def frames(first: int, count: int, size: int = 20) -> bytes:
    return b"".join(frame(i, size) for i in range(first, first + count))


def lines_in(journal: Journal) -> list[bytes]:
    entries, used = FrameDecoder().decode(journal.read(journal.start, journal.end - journal.start), final=True)
    return [e[2] for e in entries]


class Disk:
    """A tmpfs whose free space a test takes and gives back."""

    def __init__(self, path) -> None:
        self.path = path
        path.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(path)], check=True)
        self.filler = path / "filler"

    def fill(self) -> None:
        with open(self.filler, "ab", buffering=0) as f, contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 4096)

    def free(self) -> None:
        self.filler.unlink()

    def umount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False)


@pytest.fixture
def disk(tmp_path):
    d = Disk(tmp_path / "small")
    yield d
    d.umount()


class Fifo:
    """A FIFO held read-write as dockerd holds it, drained by a FifoSource into ``journal``."""

    def __init__(self, tmp_path, journal: Journal) -> None:
        self.path = str(tmp_path / "fifo")
        os.mkfifo(self.path)
        self.wfd = os.open(self.path, os.O_RDWR)
        self.dropped: list[tuple] = []
        self.source = FifoSource(self.path, journal, lambda: None, lambda src: None,
                                 lambda counts: self.dropped.append(counts))

    def write(self, data: bytes) -> None:
        os.write(self.wfd, data)

    def dropped_lines(self) -> int:
        return sum(c[0] + c[2] for c in self.dropped)

    def close(self) -> None:
        os.close(self.wfd)


def drain_in_thread(source: FifoSource, timeout: float = 10.0):
    """drain() in a thread: a reader that spins without reading fails the test instead of hanging it."""
    result: list = []
    t = threading.Thread(target=lambda: result.append(source.drain()), daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        source.journal.splice_from = _stop_spinning  # ends the spin at its next splice
        t.join(timeout)
        pytest.fail("drain() spun without reading the pipe")
    return result[0]


def _stop_spinning(*args):
    raise RuntimeError("the test stopped a spinning drain()")


def test_full_disk_with_the_journal_on_a_frame_boundary_keeps_reading_the_pipe(tmp_path, disk):
    journal = Journal(str(disk.path / "j"), segment_bytes=1 << 20)  # empty: it ends on a frame boundary
    disk.fill()
    fifo = Fifo(tmp_path, journal)
    data = frames(0, 1000)
    fifo.write(data)
    assert drain_in_thread(fifo.source) == len(data)
    assert fifo.dropped_lines() == 1000 and journal.end == 0
    fifo.close()


FRAME = len(frame(0))  # 44 bytes: frames straddle the 4 KiB pages a tmpfs hands out


def free_pages(disk: Disk, pages: int) -> None:
    os.truncate(disk.filler, os.path.getsize(disk.filler) - pages * 4096)


def torn_setup(tmp_path, disk, count: int = 1000):
    """A journal of 4 KiB segments with room for two: splice stops inside frame 186, which straddles the end of
    the second segment (8192 = 186 * 44 + 8)."""
    journal = Journal(str(disk.path / "j"), segment_bytes=4096)
    disk.fill()
    free_pages(disk, 2)
    fifo = Fifo(tmp_path, journal)
    fifo.write(frames(0, count))
    return journal, fifo


def test_the_frame_cut_by_a_full_disk_is_taken_back_whole_and_the_rest_dropped_whole(tmp_path, disk):
    journal, fifo = torn_setup(tmp_path, disk)
    assert drain_in_thread(fifo.source) == 1000 * FRAME
    assert journal.end == 186 * FRAME  # the 8 bytes of frame 186 went back to memory with the segment they began
    assert lines_in(journal) == [b"%020d" % i for i in range(186)]
    assert fifo.dropped_lines() == 1000 - 186 and sum(c[4] for c in fifo.dropped) == 0  # none counted as garbled
    again = Journal(str(disk.path / "j"), segment_bytes=4096)  # what a kill now leaves: whole frames only
    decoder = FrameDecoder()
    decoder.decode(again.read(0, again.end), final=True)
    assert again.end == 186 * FRAME and decoder.garbled == 0
    again.close()
    disk.free()
    fifo.write(frames(1000, 100))
    assert drain_in_thread(fifo.source) == 100 * FRAME
    assert lines_in(journal) == [b"%020d" % i for i in [*range(186), *range(1000, 1100)]]
    fifo.close()


def test_lines_read_after_room_came_back_are_stored_not_dropped(tmp_path, disk, monkeypatch):
    journal, fifo = torn_setup(tmp_path, disk)
    real_read = os.read

    def read_then_room_comes_back(fd, n):
        data = real_read(fd, n)
        if fd == fifo.source.fd and disk.filler.exists():
            disk.free()  # the room comes back while the reader holds what it just read
        return data

    monkeypatch.setattr(os, "read", read_then_room_comes_back)
    drain_in_thread(fifo.source)
    assert fifo.dropped_lines() == 0
    assert lines_in(journal) == [b"%020d" % i for i in range(1000)]
    fifo.close()


def test_garbage_while_the_disk_is_full_is_skipped_counted_and_memory_stays_bounded(tmp_path, disk):
    journal, fifo = torn_setup(tmp_path, disk)
    drain_in_thread(fifo.source)
    fifo.write(b"\xff\xff\xff\xff garbage: a length no frame has")
    sent = 0
    for chunk in range(40):  # 40 x 500 frames of 124 bytes through a full disk, each read dropped
        fifo.write(frames(chunk * 500, 500, size=100))
        sent += 500
        drain_in_thread(fifo.source)
        assert len(fifo.source._overflow._buf) < PIPE_SIZE  # what waits in memory is one unfinished frame at most
    assert fifo.dropped_lines() == 814 + sent
    assert sum(c[4] for c in fifo.dropped) == 1  # the garbage: one incident
    fifo.close()


def test_the_fifo_closing_while_the_disk_is_full_counts_its_unfinished_line(tmp_path, disk):
    journal, fifo = torn_setup(tmp_path, disk)
    fifo.write(frame(1000)[:20])  # the start of line 1000: its rest never comes
    drain_in_thread(fifo.source)
    fifo.source.close()
    assert fifo.dropped_lines() == 1001 - 186  # line 1000 too: every line read is stored or counted
    assert lines_in(journal) == [b"%020d" % i for i in range(186)]
    fifo.close()


def test_the_fifo_closing_with_room_again_keeps_the_unfinished_frame_for_the_next_reader(tmp_path, disk):
    """SIGTERM: the rest of the frame is still in the pipe; the restarted plugin's splice completes it."""
    journal, fifo = torn_setup(tmp_path, disk)
    whole = frame(1000)
    fifo.write(whole[:20])
    drain_in_thread(fifo.source)
    disk.free()
    fifo.source.close()
    fifo.write(whole[20:])
    nxt = FifoSource(fifo.path, journal, lambda: None, lambda src: None, fifo.dropped.append)
    drain_in_thread(nxt)
    assert lines_in(journal) == [b"%020d" % i for i in [*range(186), 1000]]
    assert fifo.dropped_lines() == 1000 - 186
    nxt.close()
    fifo.close()


def test_no_room_for_a_new_segment_file_drops_and_counts_instead_of_raising(tmp_path):
    mnt = tmp_path / "inodes"
    mnt.mkdir()
    # Inodes for the mount's root, the journal directory, its first segment, its incarnation file and one filler.
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,nr_inodes=5", "tmpfs", str(mnt)], check=True)
    try:
        journal = Journal(str(mnt / "j"), segment_bytes=4096)
        filler = mnt / "filler"
        filler.touch()  # the last inode: the next segment cannot be created (ENOSPC from open)
        fifo = Fifo(tmp_path, journal)
        fifo.write(frames(0, 2000))
        assert drain_in_thread(fifo.source) == 2000 * FRAME
        # splice fills the first segment with one 64 KiB move (65536 = 1489 * 44 + 20), then cannot roll
        assert lines_in(journal) == [b"%020d" % i for i in range(1489)]
        assert fifo.dropped_lines() == 2000 - 1489
        filler.unlink()
        fifo.write(frames(2000, 10))
        drain_in_thread(fifo.source)
        assert lines_in(journal)[-10:] == [b"%020d" % i for i in range(2000, 2010)]
        fifo.close()
        journal.close()
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_fifos_the_kernel_will_not_enlarge_are_one_warning_not_one_per_container(tmp_path, monkeypatch, caplog):
    # Past fs.pipe-user-pages-soft the managed plugin (no CAP_SYS_RESOURCE) gets EPERM for every new FIFO: with
    # 1,000 containers that was 940 warnings. Each FIFO still works at dockerd's size.
    import errno
    import logging

    from driver import fifo as fifo_module
    from driver.logsetup import Throttled

    real_fcntl = fifo_module.fcntl.fcntl

    def refuse_enlarging(fd, cmd, arg=0):
        if cmd == fifo_module.F_SETPIPE_SZ:
            raise PermissionError(errno.EPERM, "Operation not permitted")
        return real_fcntl(fd, cmd, arg)

    monkeypatch.setattr(fifo_module.fcntl, "fcntl", refuse_enlarging)
    monkeypatch.setattr(fifo_module, "_enlarge_refused", Throttled(fifo_module.log, interval=300.0), raising=False)
    caplog.set_level(logging.WARNING, logger="driver.fifo")
    fds = []
    try:
        for i in range(5):
            path = tmp_path / f"fifo{i}"
            os.mkfifo(path)
            writer = os.open(path, os.O_RDWR)
            fds.append(writer)
            reader = fifo_module.open_fifo(str(path))
            fds.append(reader)
            os.write(writer, b"x")
            assert os.read(reader, 1) == b"x"
    finally:
        for fd in fds:
            os.close(fd)
    warnings = [r for r in caplog.records if "enlarge" in r.getMessage()]
    assert len(warnings) == 1
