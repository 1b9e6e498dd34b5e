"""The metrics endpoint on a real dockerd: every line accounted for in a normal run, an aggregator outage, a
journal cap that outruns the forwarder, and a plugin restart in between."""

from __future__ import annotations

import pytest
import requests

from tests.plugin_harness import wait_for
from tests.process.test_metrics_process import free_port, scrape, total
from tests.support.receiver import ReceiverProcess

pytestmark = pytest.mark.e2e


def settled(addr: str, written: int) -> dict | None:
    m = scrape(addr)
    return m if total(m, "logbridge_lines_written_total") >= written and \
        total(m, "logbridge_containers_active") == 0 else None


def test_identities_through_outage_cap_and_restart(legacy_plugin, docker_run, tmp_path):
    addr = f"127.0.0.1:{free_port()}"
    plugin = legacy_plugin(env={"METRICS_ADDR": addr})
    assert requests.get(f"http://{addr}/healthz", timeout=5).json()["status"] == "ok"

    # 1. a normal run, stdout and stderr
    r = docker_run(plugin.driver, "sh", "-c", "seq 1 3000; seq 1 1000 >&2")
    assert r.rc == 0
    m = wait_for(lambda: settled(addr, 4000), timeout=30)
    assert m, scrape(addr)
    assert total(m, "logbridge_lines_received_total", stream="stdout") == 3000
    assert total(m, "logbridge_lines_received_total", stream="stderr") == 1000
    assert total(m, "logbridge_lines_written_total") == 4000
    assert total(m, "logbridge_lines_dropped_total") == 0

    # 2. an aggregator outage: lines wait in the journal, the container is not held up, all arrive later
    port = free_port()
    opts = {"fluentd-address": f"tcp://127.0.0.1:{port}", "fluentd-retry-wait": "100ms"}
    r = docker_run(plugin.driver, "sh", "-c", "seq 1 5000", log_opts=opts)
    assert r.rc == 0
    m = scrape(addr)
    assert total(m, "logbridge_backlog_bytes", sink="forward") > 0
    assert total(m, "logbridge_sink_up", sink="forward") == 0

    # 3. the plugin restarts in between (SIGKILL): counts come back from the state dir
    plugin.kill()
    plugin.restart()
    receiver = ReceiverProcess(tmp_path / "recv", port=port).start()
    try:
        m = wait_for(lambda: (lambda m: m if total(m, "logbridge_sink_lines_acked_total") >= 5000 else None)(
            scrape(addr)), timeout=60)
        assert m, scrape(addr)
        assert total(m, "logbridge_lines_written_total") == 9000
        assert total(m, "logbridge_sink_lines_acked_total") + total(m, "logbridge_sink_lines_dropped_total") == 5000
        assert len({r["record"]["log"] for r in receiver.records()}) == 5000
    finally:
        receiver.stop()

    # 4. a journal cap that outruns a dead forwarder: the sink's loss is counted, json.log loses nothing
    dead = {"fluentd-address": f"tcp://127.0.0.1:{free_port()}", "journal-max-size": "16m"}
    r = docker_run(plugin.driver, "sh", "-c", "yes 'a fairly long line of log output to fill the journal quickly"
                   " .................................................................................' "
                   "| head -n 300000", log_opts=dead)
    assert r.rc == 0
    # Counters show saved counts (the dead forwarder saves its cap drops once a second while it retries): poll.
    m = wait_for(lambda: (lambda m: m if total(m, "logbridge_lines_written_total") >= 309000 and total(
        m, "logbridge_sink_lines_dropped_total", reason="journal_cap") > 100000 else None)(scrape(addr)), timeout=60)
    assert m, scrape(addr)
    assert total(m, "logbridge_lines_dropped_total") == 0
    assert total(m, "logbridge_journal_bytes") <= 16_000_000 + 4 * 1024 * 1024
    received = total(m, "logbridge_lines_received_total")
    assert received == total(m, "logbridge_lines_written_total") + total(m, "logbridge_lines_dropped_total")
