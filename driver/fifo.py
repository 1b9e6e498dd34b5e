"""One attached FIFO: opened non-blocking, enlarged, drained into the container's journal by splice.

Draining never waits for anything downstream: the only work on a wake-up is splice (or, with a full disk, a read
whose frames are dropped and counted), so a slow sink can never reach back into the container's stdout.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import time

from driver.frames import HEADER, FrameDecoder, last_boundary
from driver.journal import Journal, JournalFull
from driver.logsetup import Throttled

log = logging.getLogger(__name__)

PIPE_SIZE = 1 << 20  # dockerd leaves the kernel's 64 KiB; 1 MiB absorbs short hiccups without blocking a container
WAKE_BUDGET = 8 << 20  # bytes moved per wake-up before giving other FIFOs a turn
# dockerd writes one frame per write(): woken for each, the plugin spent most of its CPU on wake-ups and splices
# of a few hundred bytes. After a wake-up that moved less than COALESCE_BYTES the FIFO is left alone for
# COALESCE_SECONDS so that the pipe gathers a batch; the 1 MiB pipe takes ~50 ms of the fastest writer measured
# (20 MB/s), so a container never waits for that pause.
COALESCE_BYTES = 256 << 10
COALESCE_SECONDS = 0.002
# The pause pays only for a busy container: one whose reader woke less than this ago. A quiet one (a few lines a
# second) would gather nothing in it and only pay for the extra timer and epoll changes.
BUSY_WITHIN = 0.020
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


# The kernel lets a process without CAP_SYS_RESOURCE (the managed plugin) enlarge pipes only while its user's
# pipes hold less than fs.pipe-user-pages-soft (16384 pages: 64 MiB, about 60 FIFOs of 1 MiB; root's pipes
# everywhere on the host count). Past it every new FIFO keeps dockerd's 64 KiB: one warning per few minutes, with
# the count, not one per container.
_enlarge_refused = Throttled(log, interval=300.0)


def open_fifo(path: str) -> int:
    """Open for reading without blocking (after a dockerd crash a FIFO may have no writer) and enlarge it."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)
    except OSError as exc:  # keep dockerd's size rather than fail the container
        _enlarge_refused.warning("could not enlarge FIFOs: they keep dockerd's 64 KiB (EPERM: raise the host's "
                                 "fs.pipe-user-pages-soft; count: since the last such line)",
                                 fifo=path, error=str(exc))
    return fd


class FifoSource:
    """Moves one FIFO's bytes into a journal; falls back to read-and-drop while the journal's disk is full."""

    def __init__(self, path: str, journal: Journal, on_data, on_eof, on_dropped) -> None:
        self.path = path
        self.journal = journal
        self.fd = open_fifo(path)
        # Wall-clock time, as dockerd stamps lines: every line of this run is stamped later (StartLogging returns
        # before the container starts), every line of the run before it earlier. ReadLogs' followers cut there.
        self.opened_ns = time.time_ns()
        self._on_data = on_data
        self._on_eof = on_eof
        self._on_dropped = on_dropped  # counts of the lines lost because the disk was full (see _Overflow)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._overflow: _Overflow | None = None
        self._resume: asyncio.TimerHandle | None = None
        self._woke_at = float("-inf")  # loop time of the last wake-up

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.add_reader(self.fd, self._readable)

    def _readable(self) -> None:
        moved = self.drain(WAKE_BUDGET)
        now = self._loop.time() if self._loop is not None else 0.0
        busy, self._woke_at = now - self._woke_at < BUSY_WITHIN, now
        if moved < 0:
            self.close()
            self._on_eof(self)
        elif 0 < moved < COALESCE_BYTES and busy and self._loop is not None:
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
            overflow = self._overflow
            if overflow is not None:
                # Every read goes to the journal first: only what the disk has no room for is dropped. Each turn
                # reads the pipe (or finds it empty and stops), so a full disk never makes this loop spin.
                n = overflow.pump(self.fd)
                if overflow.store():
                    log.warning("journal disk has room again", extra={"fifo": self.path})
                    self._overflow = None
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
        if self._overflow is not None:
            # The start of a frame whose rest is still in the pipe (or never came): the journal gets it if it has
            # room now; otherwise that line is counted as dropped, never lost without a count.
            self._overflow.give_up()
            self._overflow = None
            self._on_data()
        os.close(self.fd)
        self.fd = -1


class _Overflow:
    """Read-and-drop while the journal's disk is full, keeping the journal a stream of whole frames.

    On entry the torn frame splice left at the journal's end is taken back into memory, so the journal ends on a
    frame boundary (a kill now leaves no torn frame behind, and no disk-full drop can turn into garbage). Each read
    from the pipe is then offered to the journal: what it stores is cut back to the last whole frame, the whole
    frames it had no room for are dropped and counted by stream, and the unfinished frame at the end of the read is
    kept for the next read. Memory stays bounded: at most one frame (≤ MAX_FRAME) plus one read.
    """

    def __init__(self, journal: Journal, on_dropped) -> None:
        self._journal = journal
        self._on_dropped = on_dropped  # (stdout lines, stdout bytes, stderr lines, stderr bytes, garbled)
        self._decoder = FrameDecoder()
        self._buf = bytearray(journal.take_torn_tail())  # starts at a frame boundary

    def pump(self, fd: int) -> int:
        """Read the pipe into the buffer: bytes read, 0 when it is empty, -1 at EOF."""
        try:
            data = os.read(fd, PIPE_SIZE)
        except BlockingIOError:
            return 0
        if not data:
            return -1
        self._buf += data
        return len(data)

    def store(self) -> bool:
        """Offer the buffer to the journal; drop the whole frames it has no room for. True once a write stored
        everything read (splicing may resume where the buffer ended)."""
        buf = self._buf
        if not buf:
            return False  # nothing to try the disk with: stay until a read brings bytes
        done = self._journal.write(buf)
        if done == len(buf):
            buf.clear()
            return True
        whole, _ = last_boundary(buf, 0, done)
        if whole < done:
            self._journal.truncate(self._journal.end - (done - whole))  # no torn frame left in the journal
        del buf[:whole]
        garbled = self._decoder.garbled
        _, used = self._decoder.decode(bytes(buf))  # the whole frames that do not fit (and any garbage)
        if used:
            self._on_dropped((*self._decoder.counts, self._decoder.garbled - garbled))
            del buf[:used]
        return False

    def give_up(self) -> None:
        """The FIFO closes: store the unfinished frame if there is room now, else count its line as dropped."""
        if self.store() or not self._buf:
            return
        stderr = bytes(self._buf[HEADER + 2 : HEADER + 8]) == b"stderr"
        self._on_dropped((0, 0, 1, 0, 0) if stderr else (1, 0, 0, 0, 0))
        self._buf.clear()
