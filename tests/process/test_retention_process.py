"""Retention: stopped containers' logs go after RETENTION_SECONDS (keyed on their last line, not on StopLogging),
the log root stays under MAX_BYTES, running containers and dockerd's own files are never touched."""

from __future__ import annotations

import os
import secrets
import time

from tests.plugin_harness import FakeLogger, PluginProcess, wait_for


def test_old_stopped_containers_go_running_ones_stay(tmp_path):
    p = PluginProcess(tmp_path, env={"RETENTION_SECONDS": "2", "RETENTION_INTERVAL": "0.5"}).start()
    try:
        stopped = FakeLogger(p)
        stopped.start()
        stopped.log(b"old news")
        stopped.stop()
        running = FakeLogger(p)
        running.start()
        running.log(b"still here")
        docker_file = p.log_root / stopped.container_id / "config.v2.json"  # as in Docker's own container dir
        assert wait_for(lambda: p.log_file(stopped.container_id).exists())
        docker_file.write_text("{}")
        # A `docker logs` on the stopped container sends Start/Stop: it must not reset the age.
        probe = FakeLogger(p, stopped.container_id)
        probe.start()
        probe.stop()
        assert wait_for(lambda: not p.log_file(stopped.container_id).exists(), timeout=60)
        assert docker_file.exists()  # only logbridge's files are removed
        # Its state goes in the same pass, a moment after the log files: wait for it rather than race it.
        assert wait_for(lambda: not (p.state_dir / "containers" / stopped.container_id).exists(), timeout=5)
        time.sleep(1)
        assert p.log_file(running.container_id).exists()  # running: kept however old its last line
        running.stop()
    finally:
        p.kill()


def test_log_root_stays_under_its_byte_cap(tmp_path):
    p = PluginProcess(tmp_path, env={"MAX_BYTES": "300000", "RETENTION_INTERVAL": "0.3"}).start()
    try:
        for _ in range(6):
            logger = FakeLogger(p, secrets.token_hex(32), config={"max-size": "20k", "max-file": "5"})
            logger.start()
            for i in range(1500):
                logger.log(b"%06d " % i + b"y" * 40)
            logger.stop()

        def root_size():
            # Retention and rotation remove and rename files while this walks: a file listed and gone by the
            # time of its stat holds no bytes any more.
            total = 0
            for f in p.log_root.rglob("*-json.log*"):
                try:
                    total += f.stat().st_size
                except FileNotFoundError:
                    pass
            return total

        assert wait_for(lambda: root_size() <= 300000, timeout=60), root_size()
        assert any(os.scandir(p.log_root))  # the newest logs are still there
    finally:
        p.kill()
