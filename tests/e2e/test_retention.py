"""Nothing grows without bound on a real dockerd: with the recommended layout (log root = Docker's containers
folder) `docker rm` takes the logs along and node agents' default glob finds them; elsewhere the retention rule
removes a stopped container's logs some time after its last line."""

from __future__ import annotations

import glob

import pytest

from tests.e2e.conftest import unique_name
from tests.plugin_harness import wait_for
from tests.support import LegacyPlugin

pytestmark = pytest.mark.e2e


def test_recommended_layout_docker_rm_removes_the_logs(dockerd, docker_run, tmp_path):
    plugin = LegacyPlugin(unique_name("l"), dockerd.data_root / "containers", tmp_path / "state",
                          {"RETENTION_INTERVAL": "0.5"}).start()
    try:
        r = docker_run(plugin.driver, "sh", "-c", "seq 1 3")
        assert r.rc == 0
        path = plugin.json_log(r.container_id)
        assert wait_for(lambda: path.exists() and path.read_bytes().count(b"\n") == 3)
        # node agents' default glob for Docker's json-file logs finds it
        assert str(path) in glob.glob(str(dockerd.data_root / "containers" / "*" / "*-json.log"))
        assert dockerd.docker("logs", r.container_id).stdout == b"1\n2\n3\n"
        dockerd.docker("rm", r.container_id)
        assert not path.exists() and not path.parent.exists()
        # the plugin's own state for it (journal, cursors) goes at its next sweep
        assert wait_for(lambda: not (tmp_path / "state" / "containers" / r.container_id).exists())
    finally:
        dockerd.remove_containers(log_driver=plugin.driver)
        plugin.stop()


def test_retention_removes_stopped_containers_logs_after_their_last_line(legacy_plugin, docker_run, dockerd):
    plugin = legacy_plugin(env={"RETENTION_SECONDS": "3", "RETENTION_INTERVAL": "0.5"})
    old = docker_run(plugin.driver, "sh", "-c", "echo old")
    running = docker_run(plugin.driver, "sh", "-c", "echo running; sleep 60", extra_args=["-d"])
    assert old.rc == 0 and running.rc == 0
    old_log, running_log = plugin.json_log(old.container_id), plugin.json_log(running.container_id)
    assert wait_for(lambda: old_log.exists() and running_log.exists())
    assert dockerd.docker("logs", old.container_id).stdout == b"old\n"  # Start/Stop pair: not a new line
    old_state = plugin.state_dir / "containers" / old.container_id
    # The log files go first, then the state folder (one removal under the retention lock): wait for both.
    assert wait_for(lambda: not old_log.exists() and not old_state.exists(), timeout=60)
    assert running_log.exists()  # a running container's log stays, however old its last line
    assert dockerd.docker("logs", old.container_id).stdout == b""  # gone for docker logs too
