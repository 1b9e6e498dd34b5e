"""A finished container keeps no journal bytes in the state dir (json.log holds them), and its stream goes on
at the same offsets when it starts again, also after a plugin restart."""

from __future__ import annotations

import json
import os
import time

from tests.plugin_harness import FakeLogger, PluginProcess, wait_for


def _segment_bytes(p: PluginProcess, cid: str) -> int:
    total = 0
    for f in (p.state_dir / "containers" / cid / "journal").glob("*.seg"):
        try:
            total += f.stat().st_size
        except FileNotFoundError:  # released between the listing and the stat
            pass
    return total


def _lines(p: PluginProcess, cid: str) -> list[str]:
    try:
        text = p.log_file(cid).read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line)["log"] for line in text.splitlines()]


def _run(p: PluginProcess, cid: str | None, first: int, count: int) -> str:
    logger = FakeLogger(p, cid)
    logger.start()
    for i in range(first, first + count):
        logger.log(b"line %06d" % i)
    logger.stop()
    return logger.container_id


def test_finished_containers_keep_no_segment_bytes_and_restart_at_the_same_offsets(tmp_path):
    p = PluginProcess(tmp_path).start()
    try:
        ids = [_run(p, None, 0, 500) for _ in range(5)]
        for cid in ids:
            assert wait_for(lambda cid=cid: len(_lines(p, cid)) == 500, timeout=30)
            assert wait_for(lambda cid=cid: _segment_bytes(p, cid) == 0, timeout=30), _segment_bytes(p, cid)
        _run(p, ids[0], 500, 10)  # docker start again: same files, the stream goes on
        assert wait_for(lambda: len(_lines(p, ids[0])) == 510, timeout=30)
        assert wait_for(lambda: _segment_bytes(p, ids[0]) == 0, timeout=30)
        assert p.terminate() == 0
        p.start()  # a plugin restart in between: the saved cursors still point at the journal's end
        _run(p, ids[1], 500, 10)
        assert wait_for(lambda: len(_lines(p, ids[1])) == 510, timeout=30)
        assert wait_for(lambda: _segment_bytes(p, ids[1]) == 0, timeout=30)
        for cid in ids[:2]:
            assert _lines(p, cid) == [f"line {i:06d}\n" for i in range(510)]  # in order, none twice, none lost
    finally:
        p.kill()


def test_by_default_a_stopped_container_silent_for_a_week_goes(tmp_path):
    # No RETENTION_SECONDS: the default layout must not keep a removed container's logs for good (dockerd says
    # nothing at docker rm). Its last line is made 8 days old instead of waiting for it.
    p = PluginProcess(tmp_path, env={"RETENTION_INTERVAL": "0.3"}).start()
    try:
        old = _run(p, None, 0, 20)
        recent = _run(p, None, 0, 20)
        for cid in (old, recent):
            assert wait_for(lambda cid=cid: len(_lines(p, cid)) == 20, timeout=30)
            # Finished: its last segment has been replaced (a file written after the backdating would count).
            assert wait_for(lambda cid=cid: _segment_bytes(p, cid) == 0, timeout=30)
        week_ago = time.time() - 8 * 86400
        for f in [*(p.log_root / old).iterdir(), *(p.state_dir / "containers" / old / "journal").iterdir()]:
            os.utime(f, (week_ago, week_ago))
        assert wait_for(lambda: not (p.log_root / old).exists(), timeout=30)
        assert wait_for(lambda: not (p.state_dir / "containers" / old).exists(), timeout=30)
        assert _lines(p, recent) == [f"line {i:06d}\n" for i in range(20)]  # a recent one stays
    finally:
        p.kill()
