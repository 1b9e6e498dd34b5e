"""The process-wide tick (driver.gather): a quiet container's lines wait for it; what must not wait does not."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from driver.gather import GATHER_BYTES, Ticker
from driver.info import LogInfo
from driver.options import parse_options
from driver.pipeline import Pipeline
from driver.settings import Settings
from tests.unit.pipelines import CID, frames, json_log_numbers, json_log_path, run, wait_for


def _pipeline(tmp, executor, loop, ticker):
    info = LogInfo.from_json({"ContainerID": CID, "Config": {}})
    settings = Settings(log_root=str(tmp / "logs"), state_dir=str(tmp / "state"))
    return Pipeline(info, parse_options({}), settings, executor, loop, on_finished=lambda p: None, ticker=ticker)


def _lines(tmp):
    return json_log_numbers(tmp) if json_log_path(tmp).exists() else []


def test_a_quiet_containers_lines_wait_for_the_tick_then_reach_json_log(tmp_path):
    async def main():
        ticker = Ticker(period=None)  # ticks only when told
        with ThreadPoolExecutor(2) as executor:
            p = _pipeline(tmp_path, executor, asyncio.get_running_loop(), ticker)
            await wait_for(lambda: ticker.waiting == 1)  # the start's look at the journal
            ticker.tick()
            await wait_for(lambda: all(e.is_set() for e in p._idle.values()))
            p.journal.write(frames(0, 3))
            p.poke()
            await wait_for(lambda: ticker.waiting == 1)  # json.log waits for the tick
            assert _lines(tmp_path) == []
            ticker.tick()
            await wait_for(lambda: _lines(tmp_path) == [0, 1, 2])
            await p.close()
    run(main())


def test_stop_a_backlog_and_a_follower_do_not_wait_for_the_tick(tmp_path):
    async def main():
        ticker = Ticker(period=None)
        with ThreadPoolExecutor(2) as executor:
            p = _pipeline(tmp_path, executor, asyncio.get_running_loop(), ticker)
            with p.json_log_wanted():
                p.journal.write(frames(0, 1))
                p.poke()
                await wait_for(lambda: _lines(tmp_path) == [0])
            big = frames(1, GATHER_BYTES // 20 + 1)
            assert len(big) >= GATHER_BYTES
            p.journal.write(big)
            p.poke()
            await wait_for(lambda: len(_lines(tmp_path)) == 1 + GATHER_BYTES // 20 + 1)
            p.journal.write(frames(10**5, 1))
            p.poke()
            await wait_for(lambda: ticker.waiting == 1)
            p.seal()  # StopLogging's EOF: the last line goes without a tick
            await p.closed.wait()
            assert _lines(tmp_path)[-1] == 10**5
            assert ticker.ticks == 0  # not even the start's look: the follower went first
    run(main())
