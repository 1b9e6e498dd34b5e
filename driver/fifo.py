"""One attached FIFO: opened non-blocking, enlarged, drained into the container's journal by splice.

Draining never waits for anything downstream: the only work on a wake-up is splice (or, with a full disk, a read
whose frames are dropped and counted), so a slow sink can never reach back into the container's stdout.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import struct

from driver.frames import HEADER, MAX_FRAME
from driver.journal import Journal, JournalFull

log = logging.getLogger(__name__)

PIPE_SIZE = 1 << 20  # dockerd leaves the kernel's 64 KiB; 1 MiB absorbs short hiccups without blocking a container
WAKE_BUDGET = 8 << 20  # bytes moved per wake-up before giving other FIFOs a turn
# dockerd writes one frame per write(): woken for each, the plugin spent most of its CPU on wake-ups and splices
# of a few hundred bytes. After a wake-up that moved less than COALESCE_BYTES the FIFO is left alone for
# COALESCE_SECONDS so that the pipe gathers a batch; the 1 MiB pipe takes ~50 ms of the fastest writer measured
# (20 MB/s), so a container never waits for that pause.
COALESCE_BYTES = 256 << 10
COALESCE_SECONDS = 0.002
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_unpack_len = struct.Struct(">I").unpack_from


def open_fifo(path: str) -> int:
    """Open for reading without blocking (after a dockerd crash a FIFO may have no writer) and enlarge it."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)
    except OSError as exc:  # a lowered fs.pipe-max-size: keep dockerd's size rather than fail the container
        log.warning("could not enlarge FIFO", extra={"fifo": path, "error": str(exc)})
    return fd


class FifoSource:
    """Moves one FIFO's bytes into a journal; falls back to read-and-drop while the journal's disk is full."""

    def __init__(self, path: str, journal: Journal, on_data, on_eof, on_dropped) -> None:
        self.path = path
        self.journal = journal
        self.fd = open_fifo(path)
        self._on_data = on_data
        self._on_eof = on_eof
        self._on_dropped = on_dropped  # (frames, bytes) lost because the disk was full
        self._loop: asyncio.AbstractEventLoop | None = None
        self._overflow: _Overflow | None = None
        self._resume: asyncio.TimerHandle | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.add_reader(self.fd, self._readable)

    def _readable(self) -> None:
        moved = self.drain(WAKE_BUDGET)
        if moved < 0:
            self.close()
            self._on_eof(self)
        elif 0 < moved < COALESCE_BYTES and self._loop is not None:
            self._loop.remove_reader(self.fd)
            self._resume = self._loop.call_later(COALESCE_SECONDS, self._wake)

    def _wake(self) -> None:
        self._resume = None
        if self.fd >= 0 and self._loop is not None:
            self._loop.add_reader(self.fd, self._readable)

    def drain(self, budget: int = 1 << 62) -> int:
        """Move what the pipe holds now. Returns bytes moved, -1 at EOF (no writer and nothing left)."""
        if self.fd < 0:
            return -1
        total = 0
        while total < budget:
            if self._overflow is not None:
                # Room first, then read: what arrives once the disk has room again must not be dropped.
                if self._overflow.recovered(self.journal):
                    log.warning("journal disk has room again", extra={"fifo": self.path})
                    self._overflow = None
                    continue
                n = self._overflow.pump(self.fd)
            else:
                try:
                    n = self.journal.splice_from(self.fd, budget - total)
                except JournalFull:
                    log.error("journal disk full: dropping new lines until there is room", extra={"fifo": self.path})
                    self._overflow = _Overflow(self.journal, self._on_dropped)
                    continue
            if n < 0:
                if total:
                    self._on_data()
                return -1 if total == 0 else total
            if n == 0:
                break
            total += n
        if total:
            self._on_data()
        return total

    def close(self) -> None:
        if self.fd < 0:
            return
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        if self._loop is not None:
            self._loop.remove_reader(self.fd)
        os.close(self.fd)
        self.fd = -1


class _Overflow:
    """Read-and-drop while the journal cannot grow, keeping the journal's frame stream intact.

    The journal may end inside a frame: the bytes that complete it are kept, and so is the start of the last frame
    read from the pipe, so that when the disk has room again they are written and splicing resumes exactly where
    it stopped. Every whole frame in between is dropped and counted.
    """

    def __init__(self, journal: Journal, on_dropped) -> None:
        self._on_dropped = on_dropped
        boundary = _last_boundary(journal)
        self._in_journal = journal.end - boundary  # bytes of the first frame in _buf that the journal holds
        self._buf = bytearray(journal.read(boundary, self._in_journal))  # starts at a frame boundary
        self._keep = bytearray()  # the rest of the journal's unfinished frame, owed to the journal

    def pump(self, fd: int) -> int:
        try:
            data = os.read(fd, PIPE_SIZE)
        except BlockingIOError:
            return 0
        if not data:
            return -1
        self._buf += data
        self._settle()
        return len(data)

    def _settle(self) -> None:
        buf, pos, frames = self._buf, 0, 0
        while len(buf) - pos >= HEADER:
            (length,) = _unpack_len(buf, pos)
            end = pos + HEADER + length
            if length > MAX_FRAME or end > len(buf):
                break
            if pos == 0 and self._in_journal:
                self._keep += buf[self._in_journal : end]  # completes the journal's frame: kept, not dropped
                self._in_journal = 0
            else:
                frames += 1
            pos = end
        if frames:
            self._on_dropped(frames, pos)
        del buf[:pos]

    def recovered(self, journal: Journal) -> bool:
        """Try to hand the kept bytes to the journal; True once it took them all (splicing may resume)."""
        if self._in_journal:
            return False  # the journal's unfinished frame is not whole yet
        pending = bytes(self._keep + self._buf)
        done = journal.write(pending)
        if done == len(pending):
            return True
        # The stored prefix is the journal's now; the rest is owed, the same way.
        self._keep = bytearray(pending[done:])
        self._buf = bytearray()
        return False


def _last_boundary(journal: Journal) -> int:
    """The last frame boundary at or before the journal's end, walking headers from a known boundary."""
    pos = journal.known_boundary()
    while True:
        head = journal.read(pos, HEADER)
        if len(head) < HEADER:
            return pos
        (length,) = _unpack_len(head, 0)
        nxt = pos + HEADER + length
        if length > MAX_FRAME or nxt > journal.end:
            return pos
        pos = nxt
