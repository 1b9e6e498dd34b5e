"""A state file the full disk refuses: the old content stays, one warning, counted, retried until it lands."""

from __future__ import annotations

import asyncio
import errno
import json
import logging

from driver import statefiles
from driver.statefiles import StateFiles


def test_a_refused_state_file_keeps_its_content_is_warned_once_counted_and_written_once_there_is_room(
        tmp_path, monkeypatch, caplog):
    path = tmp_path / "fifos.json"
    path.write_text(json.dumps({"old": 1}))
    real = statefiles.write_atomic
    full = {"on": True}

    def write(p, text):
        if full["on"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(p, text)

    monkeypatch.setattr(statefiles, "write_atomic", write)
    newest = {"value": 0}

    async def run() -> None:
        files = StateFiles(asyncio.get_running_loop(), retry_after=0.01)
        for value in (1, 2, 3):
            newest["value"] = value
            assert not files.save(str(path), lambda: json.dumps(newest))
        assert json.loads(path.read_text()) == {"old": 1}  # the previous content, never a torn file
        assert files.failures["fifos.json"] == 3 and files.owed == [str(path)]
        for _ in range(5):  # retries keep failing while the disk is full
            await asyncio.sleep(0.02)
        full["on"] = False
        deadline = asyncio.get_running_loop().time() + 10
        while files.owed and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        assert not files.owed
        files.close()

    with caplog.at_level(logging.WARNING, logger="driver.statefiles"):
        asyncio.run(run())
    assert json.loads(path.read_text()) == {"value": 3}  # the newest content, once there was room
    assert len([r for r in caplog.records if "could not save state file" in r.getMessage()]) == 1
