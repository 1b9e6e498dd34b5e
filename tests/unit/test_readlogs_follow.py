"""ReadLogs' follow loop when `docker logs -f` goes away while a read runs in a worker thread (issue 15)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from driver import readlogs
from driver.frames import FrameDecoder
from driver.logfile import Follower, LogFile
from tests.unit.test_logfile import lines, open_fds, t


def test_a_cancelled_follow_closes_the_follower_after_its_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Closed while poll() ran in the executor, the follower reopened the file in that poll and leaked it."""
    path = tmp_path / "c" / "c-json.log"
    w = LogFile(str(path), 300, 3, False)
    w.write_lines(lines(0, 3))
    in_poll, release, polled = threading.Event(), threading.Event(), threading.Event()
    real_poll = Follower.poll

    def held_poll(self: Follower):
        in_poll.set()
        release.wait(10)
        try:
            return real_poll(self)
        finally:
            polled.set()

    monkeypatch.setattr(Follower, "poll", held_poll)
    # the container's logger is open: follow until cancelled
    running = SimpleNamespace(fifo=object(), json_log_wanted=contextlib.nullcontext)
    registry = SimpleNamespace(pipelines={"c": running})
    request = SimpleNamespace(transport=SimpleNamespace(is_closing=lambda: False))
    response = SimpleNamespace(write=lambda data: asyncio.sleep(0))
    cfg = readlogs.ReadConfig(tail=-1, follow=True, since_ns=None, until_ns=None)

    async def scenario() -> set[str]:
        before = open_fds()  # with the loop's own descriptors
        follower = Follower(str(path))
        w.write_lines(lines(3, 10))  # rotates: the held poll leaves the file and enters the next one
        task = asyncio.create_task(readlogs._follow(asyncio.get_running_loop(), request, response, registry, "c",
                                                    follower, cfg))
        assert await asyncio.to_thread(in_poll.wait, 10)
        task.cancel()  # the client went away
        await task
        release.set()
        assert await asyncio.to_thread(polled.wait, 10)
        deadline = time.monotonic() + 10
        while (left := open_fds() - before) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return left

    try:
        assert asyncio.run(scenario()) == set()  # every descriptor the follower opened is closed
    finally:
        release.set()
        w.close()


def follow_across_restart(tmp_path: Path, restart) -> list[bytes]:
    """Follow a json.log holding lines 0-2 until the follow ends; `restart(writer, pipeline)` runs once the history
    is sent. The lines the follower showed."""
    path = tmp_path / "c" / "c-json.log"
    w = LogFile(str(path), None, 1, False)
    w.write_lines(lines(0, 3))
    caught_up = lambda limit: asyncio.sleep(0, True)  # noqa: E731 - json.log holds the journal
    pipeline = SimpleNamespace(fifo=SimpleNamespace(opened_ns=0), json_log_caught_up=caught_up,
                               json_log_wanted=contextlib.nullcontext)
    registry = SimpleNamespace(pipelines={"c": pipeline})
    request = SimpleNamespace(transport=SimpleNamespace(is_closing=lambda: False))
    written: list[bytes] = []
    response = SimpleNamespace(write=lambda data: asyncio.sleep(0, written.append(data)))
    cfg = readlogs.ReadConfig(tail=-1, follow=True, since_ns=None, until_ns=None)

    async def scenario() -> None:
        task = asyncio.create_task(readlogs._follow(asyncio.get_running_loop(), request, response, registry, "c",
                                                    Follower(str(path)), cfg))
        deadline = time.monotonic() + 10
        while not written and time.monotonic() < deadline:
            await asyncio.sleep(0.01)  # history sent: the follow is under way
        restart(w, pipeline)
        done, _ = await asyncio.wait({task}, timeout=10)
        assert task in done, "still following the next run"
        task.result()

    try:
        asyncio.run(scenario())
    finally:
        w.close()
    entries, _ = FrameDecoder().decode(b"".join(written), final=True)
    return [entry[2] for entry in entries]


def test_follow_ends_when_the_followed_logger_is_replaced_by_a_restart(tmp_path: Path):
    """Issue 14 point 5: `docker restart` swaps the container's FIFO between two looks: the follow must end
    (json-file's follower ends when the logger it followed closes), not follow the next run."""

    def restart(w: LogFile, pipeline: SimpleNamespace) -> None:
        # StopLogging and StartLogging of the restart, between two polls
        pipeline.fifo = SimpleNamespace(opened_ns=time.time_ns())

    assert follow_across_restart(tmp_path, restart) == [b"line %d\n" % i for i in range(3)]


def test_follow_shows_no_line_of_the_next_run_already_in_json_log(tmp_path: Path):
    """The CI race of 53cad33: `docker restart` swapped the FIFO and json.log took the next run's first lines before
    the follow loop looked; its last poll printed them. A line stamped after the new FIFO opened is the next run's."""

    def restart(w: LogFile, pipeline: SimpleNamespace) -> None:
        # Between two looks: the run's last lines, the restart (its new FIFO opens between t(5) and t(6)), and the
        # next run's first lines, all in json.log.
        w.write_lines(lines(3, 6))
        pipeline.fifo = SimpleNamespace(opened_ns=t(5) + 1)
        w.write_lines(lines(6, 9))

    assert follow_across_restart(tmp_path, restart) == [b"line %d\n" % i for i in range(6)]
