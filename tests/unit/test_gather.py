"""The process-wide tick (driver.gather): a quiet container's lines wait for it; what must not wait does not."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

from driver import fifo
from driver.fifo import FifoSource
from driver.gather import GATHER_BYTES, Ticker
from driver.info import LogInfo
from driver.options import parse_options
from driver.pipeline import Pipeline
from driver.settings import Settings
from tests.unit.pipelines import CID, frames, json_log_numbers, json_log_path, run, wait_for
from tests.unit.receivers import receiver


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


def test_a_forward_output_takes_a_quiet_containers_lines_at_the_tick_in_one_request_and_sends_no_empty_one(tmp_path):
    async def main():
        ticker = Ticker(period=None)
        async with receiver() as (server, records):
            with ThreadPoolExecutor(2) as executor:
                info = LogInfo.from_json({"ContainerID": CID, "Config": {"fluentd-address": str(server.address)}})
                settings = Settings(log_root=str(tmp_path / "logs"), state_dir=str(tmp_path / "state"))
                p = Pipeline(info, parse_options(info.config), settings, executor, asyncio.get_running_loop(),
                             on_finished=lambda p: None, ticker=ticker)
                await wait_for(lambda: ticker.waiting == 2)  # json.log's and forward's look at the journal
                ticker.tick()
                await wait_for(lambda: all(e.is_set() for e in p._idle.values()))
                for i in range(3):  # three writes, as dockerd makes them: one frame per line
                    p.journal.write(frames(i, 1))
                    p.poke()
                await wait_for(lambda: ticker.waiting == 2)
                await asyncio.sleep(0.05)
                assert records == [] and server.stats.requests == 0  # forward waits for the tick too
                ticker.tick()
                await wait_for(lambda: len(records) == 3)
                assert [r["record"]["log"] for r in records] == ["000000", "000001", "000002"]
                assert server.stats.requests == 1  # the three lines in one forward message
                await wait_for(lambda: all(e.is_set() for e in p._idle.values()))
                p.poke()  # woken with nothing new: the step at the tick sends nothing
                await wait_for(lambda: ticker.waiting == 2)
                ticker.tick()
                await wait_for(lambda: all(e.is_set() for e in p._idle.values()))
                await asyncio.sleep(0.05)
                assert server.stats.requests == 1 and len(records) == 3
                await p.close()
    run(main())


def test_the_fifo_pauses_to_gather_only_for_a_busy_container(tmp_path, monkeypatch):
    """A reader woken again within BUSY_WITHIN pauses COALESCE_SECONDS so the pipe gathers a batch; a quiet
    container's reader (its last wake-up long ago) reads on at once: the pause would only delay its line."""
    async def main():
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(1) as executor:
            p = _pipeline(tmp_path, executor, loop, Ticker(period=None))
            path = str(tmp_path / "fifo")
            os.mkfifo(path)
            writer = os.open(path, os.O_RDWR)  # as dockerd holds it
            try:
                source = FifoSource(path, p.journal, lambda: None, lambda f: None, lambda c: None)
                source.start(loop)
                try:
                    source._woke_at = loop.time() - 1.0  # quiet: a second since the last wake-up
                    os.write(writer, frames(0, 1))
                    source._readable()
                    assert source._resume is None  # still reading: no pause
                    monkeypatch.setattr(fifo, "BUSY_WITHIN", 3600.0)  # whatever the load, the next wake is "soon"
                    os.write(writer, frames(1, 1))
                    source._readable()
                    assert source._resume is not None  # busy: paused to let the pipe gather
                    await wait_for(lambda: source._resume is None)  # and reading again after the pause
                    assert p.journal.end == 2 * len(frames(0, 1))
                finally:
                    source.close()
            finally:
                os.close(writer)
                await p.close()
    run(main())
