"""The journal cap against json.log: it may give up only what json.log has written *and saved*, so a kill at any
moment replays into json.log without a duplicate, a torn line or a garbled frame."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import driver.sinks.jsonlog as jsonlog
from tests.unit.pipelines import finish, frames, json_log_numbers, make_pipeline, run


def test_cap_while_json_log_catches_up_then_kill_replays_exactly_once(tmp_path, monkeypatch):
    monkeypatch.setattr(jsonlog, "SAVE_INTERVAL", 1e9)  # no periodic save between the batches below
    n = 40_000  # ~1.2 MB of frames: many times the cap set below

    async def first_run():
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(4) as executor:
            p = make_pipeline(tmp_path, executor, loop)
            await p.idle()
            p.journal.segment_bytes, p.journal.max_bytes = 64 << 10, 256 << 10  # a small cap, small segments
            p.journal.write(frames(0, n))
            w = p.jsonlog
            for _ in range(3):  # json.log writes three batches (not saved yet), then the cap runs
                assert w.pump()
            await p._enforce_cap()
            # killed here: no close, no save

    run(first_run())

    async def second_run():
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(4) as executor:
            return await finish(tmp_path, executor, loop)

    p = run(second_run())
    got = json_log_numbers(tmp_path)
    assert len(got) == len(set(got)), f"{len(got) - len(set(got))} lines doubled"
    assert got == list(range(n))
    assert p.stats.dropped_lines["garbled_frame"] == 0
    assert p.stats.dropped_lines["journal_cap"] == 0
