"""Closing a pipeline: exactly once, and never with a json.log cursor that runs ahead of json.log."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from tests.unit.pipelines import frames, json_log_numbers, make_pipeline, run, wait_for


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
