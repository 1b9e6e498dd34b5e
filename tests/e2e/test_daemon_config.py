"""How most hosts use a log driver: as the daemon's default in daemon.json (with a logbridge profile), and through
Compose (Debian 12's docker-compose 1.29.2, the `docker-compose logs` of a service logging through logbridge)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.e2e.conftest import another_dockerd, unique_name
from tests.support import LegacyPlugin, read_entries, wait_for
from tests.support.receiver import ReceiverProcess

pytestmark = pytest.mark.e2e


def test_daemon_json_default_driver_with_a_profile(tmp_path_factory):
    """daemon.json names logbridge and a profile; a plain `docker run` (no --log-driver) then writes json.log with
    the daemon's max-size/max-file and forwards to the profile's destination."""
    base = tmp_path_factory.mktemp("daemonjson")
    receiver = ReceiverProcess(base / "recv").start()
    profiles = base / "profiles.json"
    profiles.write_text(json.dumps({"node": {"fluentd-address": receiver.address, "labels": "tier"}}))
    plugin = LegacyPlugin(unique_name("d"), base / "logs", base / "state", {"LOGBRIDGE_PROFILES": str(profiles)})
    plugin.start()
    config = {"log-driver": plugin.name,
              "log-opts": {"logbridge-profile": "node", "max-size": "20k", "max-file": "3"}}
    try:
        with another_dockerd(config=config) as daemon:
            r = daemon.run("bb:latest", "sh", "-c", "seq 1 3000", extra_args=("--label", "tier=web"))
            assert r.rc == 0, r.stderr
            inspect = json.loads(daemon.docker("inspect", r.container_id).stdout)[0]
            assert inspect["HostConfig"]["LogConfig"] == {"Type": plugin.name, "Config": config["log-opts"]}

            current = plugin.json_log(r.container_id)
            wait_for("json.log to hold line 3000", lambda: current.exists() and
                     read_entries(current) and read_entries(current)[-1]["log"] == "3000\n", 30)
            rotated = sorted(current.parent.glob(current.name + ".*"))
            assert [p.name[len(current.name):] for p in rotated] == [".1", ".2"]  # max-file=3 from daemon.json
            assert all(p.stat().st_size <= 20 * 1024 for p in [current, *rotated])  # max-size=20k
            kept = [e["log"] for p in [*reversed(rotated), current] for e in read_entries(p)]
            assert [int(x) for x in kept] == list(range(3001 - len(kept), 3001))  # the newest, none missing
            logs = daemon.docker("logs", r.container_id).stdout.decode()
            assert logs == "".join(kept)  # docker logs reads what the three files hold

            records = receiver.wait_records(3000, timeout=60)  # the profile's destination
            assert [rec["record"]["log"] for rec in records] == [str(i) for i in range(1, 3001)]
            assert records[0]["record"]["tier"] == "web"  # the profile's labels=tier
            daemon.remove_containers()
    finally:
        plugin.stop()
        receiver.stop()


def test_docker_compose_logs_through_logbridge(dockerd, bb_image, legacy_plugin, tmp_path):
    compose = shutil.which("docker-compose")
    assert compose, "docker-compose not found: run scripts/install-deps.sh (Debian package docker-compose)"
    plugin = legacy_plugin()
    project = tmp_path / "app"
    project.mkdir()
    (project / "docker-compose.yml").write_text(json.dumps({  # JSON is YAML; $$ is Compose's escaped $
        "version": "2.4",
        "services": {"web": {
            "image": bb_image, "network_mode": "none",
            "command": ["sh", "-c", "for i in $$(seq 1 200); do echo web line $$i; done; echo to stderr >&2"],
            "logging": {"driver": plugin.name, "options": {"max-size": "1m"}},
        }},
    }))
    name = unique_name("c")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([compose, "-p", name, *args], cwd=project, env=dockerd.env, capture_output=True,
                              text=True, timeout=120)

    try:
        up = run("up", "--no-color", "--exit-code-from", "web")  # attached: waits for the service to exit
        assert up.returncode == 0, up.stdout + up.stderr
        cid = run("ps", "-q", "web").stdout.strip()
        assert cid
        wait_for("json.log to hold the last line", lambda: (lambda p: p.exists() and any(
            e["log"] == "to stderr\n" for e in read_entries(p)))(plugin.json_log(cid)), 30)

        logs = run("logs", "--no-color", "web")
        assert logs.returncode == 0, logs.stderr
        lines = [line.split("|", 1)[1].strip() for line in logs.stdout.splitlines() if "|" in line]
        # dockerd copies stdout and stderr in two goroutines: the stderr line may come anywhere (as with json-file)
        assert [line for line in lines if line != "to stderr"] == [f"web line {i}" for i in range(1, 201)]
        assert lines.count("to stderr") == 1
        assert run("logs", "--no-color", "--tail", "2", "web").stdout.count("|") == 2
    finally:
        run("down", "--remove-orphans")
