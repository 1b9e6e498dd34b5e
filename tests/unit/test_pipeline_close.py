"""Closing a pipeline: exactly once, and never with a json.log cursor that runs ahead of json.log."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from tests.unit.pipelines import finish, frames, json_log_numbers, make_pipeline, run, wait_for


def test_a_second_seal_does_not_close_the_pipeline_twice(tmp_path):
    # dockerd's empty StartLogging/StopLogging pair (`docker logs` on a stopped container) reaches a pipeline that
    # is still finishing its backlog: its FIFO ends too, and the pipeline is sealed a second time.
    async def main():
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(4) as executor:
            finished: list = []
            p = make_pipeline(tmp_path, executor, loop, finished)
            closes = []
            real_close_sync = p._close_sync
            p._close_sync = lambda: (closes.append(1), real_close_sync())[1]
            p.journal.write(frames(0, 100))
            p.seal()
            p.seal()
            await p.closed.wait()
            await wait_for(lambda: len(finished) >= 1)
            for _ in range(20):  # let a second finisher, if any, reach its close
                await asyncio.sleep(0.01)
            return closes, finished

    closes, finished = run(main())
    assert len(closes) == 1
    assert len(finished) == 1
    assert json_log_numbers(tmp_path) == list(range(100))


def test_close_called_twice_at_once_closes_once(tmp_path):
    async def main():
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(4) as executor:
            p = make_pipeline(tmp_path, executor, loop)
            closes = []
            real_close_sync = p._close_sync
            p._close_sync = lambda: (closes.append(1), real_close_sync())[1]
            results = await asyncio.gather(p.close(), p.close(), return_exceptions=True)
            return closes, results

    closes, results = run(main())
    assert closes == [1]
    assert results == [None, None]


class _WatchedLock:
    """A lock that says when a thread other than ``owner`` asks for it (the closer waiting for the batch)."""

    def __init__(self, lock, contended: threading.Event) -> None:
        self._lock = lock
        self._contended = contended
        self.owner: int | None = None

    def __enter__(self):
        if self.owner is not None and self.owner != threading.get_ident():
            self._contended.set()
        self._lock.acquire()
        self.owner = threading.get_ident()
        return self

    def __exit__(self, *exc):
        self.owner = None
        self._lock.release()


def test_close_after_the_grace_period_waits_for_the_batch_in_flight(tmp_path):
    # SIGTERM with a json.log backlog: the grace period ends while a batch is being written in a worker thread.
    # The saved cursor must match json.log; after the restart every line is there exactly once.
    n = 20_000  # several batches
    release = threading.Event()  # set when closing would race the batch (cursor saved / closer waiting)
    writing = threading.Event()

    async def first_run():
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(4) as executor:
            p = make_pipeline(tmp_path, executor, loop)
            w = p.jsonlog
            w._busy = _WatchedLock(w._busy, release)
            real_write, real_save = w.logfile.write_lines, w.store.save
            calls = []

            def blocked_second_write(lines):
                calls.append(len(lines))
                if len(calls) == 2:  # the second batch: held until the close has started
                    writing.set()
                    assert release.wait(30)
                real_write(lines)

            def save(cursor, *a, **kw):
                if writing.is_set():
                    release.set()  # the close saved a cursor while the batch was still being written
                return real_save(cursor, *a, **kw)

            w.logfile.write_lines = blocked_second_write
            w.store.save = save
            p.journal.write(frames(0, n))
            p.poke()
            await wait_for(writing.is_set)
            await p.close(grace=0.01)

    run(first_run())

    async def second_run():  # the restarted plugin
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(4) as executor:
            await finish(tmp_path, executor, loop)

    run(second_run())
    assert json_log_numbers(tmp_path) == list(range(n))
