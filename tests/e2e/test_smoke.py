"""Smoke: a container's output reaches <log root>/<id>/<id>-json.log through logbridge, legacy and managed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import RunResult, wait_for_entries

pytestmark = pytest.mark.e2e

SEQ = ("sh", "-c", "seq 1 5")


def assert_five_lines(result: RunResult, json_log: Path) -> None:
    assert result.rc == 0, result.stderr.decode(errors="replace")
    assert result.stdout == b"1\n2\n3\n4\n5\n"
    entries = wait_for_entries(json_log, 5)
    assert [e["log"] for e in entries] == [f"{i}\n" for i in range(1, 6)]
    assert all(e["stream"] == "stdout" for e in entries)


def test_legacy_plugin_writes_json_log(legacy_plugin, docker_run):
    plugin = legacy_plugin()
    result = docker_run(plugin.driver, *SEQ)
    assert_five_lines(result, plugin.json_log(result.container_id))


def test_managed_plugin_writes_json_log(managed_plugin, docker_run):
    plugin = managed_plugin()
    result = docker_run(plugin.driver, *SEQ)
    assert_five_lines(result, plugin.json_log(result.container_id))


def test_managed_plugin_fifos_live_outside_its_rootfs(managed_plugin, dockerd, bb_image):
    """config.json's propagatedMount covers /run/docker/logging, so dockerd creates a managed plugin's FIFOs
    in <plugin dir>/propagated-mount, which `docker plugin upgrade` keeps (it replaces rootfs/)."""
    plugin = managed_plugin()
    cid = (
        dockerd.docker("run", "-d", "--network", "none", "--log-driver", plugin.driver, bb_image, "sleep", "60")
        .stdout.decode()
        .strip()
    )
    plugin_home = dockerd.data_root / "plugins" / plugin.id
    fifos = [p for p in (plugin_home / "propagated-mount").iterdir() if p.is_fifo()]
    assert len(fifos) == 1
    assert not any((plugin_home / "rootfs" / "run" / "docker" / "logging").glob("*"))
    dockerd.docker("rm", "-f", cid)
    assert not fifos[0].exists()  # dockerd unlinks it when the logger closes
