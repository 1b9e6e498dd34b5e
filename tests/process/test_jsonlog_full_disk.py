"""The log root fills up (issue 14 point 3): json.log falls behind its journal. `docker logs` must still serve every
line (json.log's, then the journal's), the writer must keep writing what fits, and once room returns json.log
catches up without a traceback, also after dockerd's empty Start/Stop pair for `docker logs` on the stopped
container."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.plugin_harness import FakeLogger, PluginProcess, wait_for
from tests.process.test_forward_process import queued
from tests.process.test_plugin_process import numbers_in, read_logs

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")

N = 20_000  # ~1.7 MB of json.log: far more than the log root holds


def test_docker_logs_while_the_log_root_is_full_serves_every_line_and_json_log_catches_up(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(logs)], check=True)
    plugin = PluginProcess(tmp_path).start()
    try:
        logger = FakeLogger(plugin)
        logger.start()
        for first in range(0, N, 500):
            logger.write(b"".join(_frame(i) for i in range(first, first + 500)))
        assert wait_for(lambda: queued(logger.fd) == 0)  # every line is in the journal
        assert wait_for(lambda: "log disk full" in plugin.stdout.read_text())
        path = plugin.log_file(logger.container_id)
        # the writer writes what fits (before: nothing, the 256 KiB batch never fitted)
        assert wait_for(lambda: os.path.getsize(path) > 400_000)

        got = read_logs(plugin, logger.container_id)  # `docker logs` with json.log far behind
        assert [int(line) for _, line in got] == list(range(N))
        got = read_logs(plugin, logger.container_id, Tail=5)
        assert [int(line) for _, line in got] == list(range(N - 5, N))

        logger.stop()  # the container stops with json.log still behind
        again = FakeLogger(plugin, container_id=logger.container_id)  # `docker logs` on the stopped container
        again.start()
        again.stop()
        assert [int(line) for _, line in read_logs(plugin, logger.container_id, Tail=3)] == [N - 3, N - 2, N - 1]

        subprocess.run(["mount", "-o", "remount,size=16m", str(logs)], check=True)  # room again
        assert wait_for(lambda: numbers_in(path)[-1:] == [N - 1])
        assert numbers_in(path) == list(range(N))
        out = plugin.stdout.read_text()
        assert "Task exception was never retrieved" not in out and "Bad file descriptor" not in out
    finally:
        plugin.kill()
        subprocess.run(["umount", "-l", str(logs)], check=False)


def _frame(i: int) -> bytes:
    from driver.frames import encode_entry

    return encode_entry(("stdout", 10**18 + i, b"%d" % i, False, False, "", 0))
