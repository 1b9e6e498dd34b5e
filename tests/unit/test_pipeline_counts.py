"""The pipeline's counts as the metrics see them: as saved with the cursors (what a restart continues from)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from tests.unit.pipelines import frames, make_pipeline, run, wait_for


def test_a_quiet_containers_last_lines_reach_the_saved_counts(tmp_path):
    """json.log saves at most once a second while busy: lines written within a second of its last save (here: of
    its start), then silence, must still reach the saved counts (the idle save), not wait for the container's next
    line or its end."""
    async def main():
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(2)
        p = make_pipeline(tmp_path, executor, loop)
        try:
            p.journal.write(frames(0, 15))
            p.poke()
            await wait_for(lambda: p.stats.lines_written == 15)
            await wait_for(lambda: p.saved_counts()[0].lines_written == 15, limit=10)
            return p.saved_counts()[0]
        finally:
            await p.close()
            executor.shutdown()

    saved = run(main())
    assert saved.lines_written == 15 and saved.received_lines["stdout"] == 15
