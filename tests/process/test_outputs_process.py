"""Outputs as plug-ins, on the plugin process: LOGBRIDGE_OUTPUT_MODULES loads a test-only output
(tests/support/file_output.py) that its own log-opt turns on beside forward. With the forward destination dead,
the test output gets every line at once, each output has its own metrics, and forward delivers its backlog when
its destination comes up, after a plugin restart too."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.plugin_harness import ROOT, FakeLogger, PluginProcess, wait_for
from tests.process.test_metrics_process import scrape, total
from tests.support import file_output
from tests.support.receiver import ReceiverProcess, free_port, numbers

MODULES = {"LOGBRIDGE_OUTPUT_MODULES": "tests.support.file_output"}
N = 3000


@pytest.fixture
def plugin(tmp_path):
    addr = f"127.0.0.1:{free_port()}"
    p = PluginProcess(tmp_path, env={"METRICS_ADDR": addr, **MODULES}).start()
    p.addr = addr
    yield p
    if p.proc and p.proc.poll() is None:
        p.kill()


def test_test_output_runs_beside_a_dead_forward_then_forward_catches_up(plugin, tmp_path):
    port = free_port()  # nobody listens yet
    delivered = tmp_path / "delivered.jsonl"
    logger = FakeLogger(plugin, config={"fluentd-address": f"tcp://127.0.0.1:{port}", "fluentd-retry-wait": "100ms",
                                        "testfile-path": str(delivered)})
    logger.start()
    for i in range(1, N + 1):
        logger.log(b"%d" % i)
    assert wait_for(lambda: len(file_output.read_lines(delivered)) >= N, timeout=30)
    assert file_output.read_lines(delivered) == [str(i) for i in range(1, N + 1)]

    # Counters show saved counts, a save behind what was delivered: poll.
    m = wait_for(lambda: (lambda m: m if total(m, "logbridge_sink_lines_acked_total", sink="testfile") == N else None)(
        scrape(plugin.addr)), timeout=30)
    assert m, scrape(plugin.addr)
    assert total(m, "logbridge_sink_lines_acked_total", sink="forward") == 0
    assert total(m, "logbridge_sink_up", sink="testfile") == 1
    assert total(m, "logbridge_sink_up", sink="forward") == 0
    assert total(m, "logbridge_backlog_bytes", sink="forward") > 0
    assert wait_for(lambda: total(scrape(plugin.addr), "logbridge_backlog_bytes", sink="testfile") == 0)

    # The container stops while forward is still down; the plugin restarts and finishes forward's backlog alone.
    logger.stop()
    assert plugin.terminate() == 0
    plugin.start()
    rcv = ReceiverProcess(tmp_path / "receiver", port=port).start()
    try:
        rcv.wait_numbers(N, timeout=60)
        seen = numbers(rcv.logs())
        assert all(seen[i] for i in range(1, N + 1))
        assert wait_for(lambda: total(scrape(plugin.addr), "logbridge_sink_lines_acked_total", sink="forward") == N)
    finally:
        rcv.stop()
    assert file_output.read_lines(delivered) == [str(i) for i in range(1, N + 1)]  # its cursor was saved: no resend


def test_an_output_module_that_cannot_be_loaded_stops_the_plugin_with_its_name(tmp_path):
    env = dict(os.environ, LOGBRIDGE_SOCKET=str(tmp_path / "p.sock"), LOGBRIDGE_LOG_ROOT=str(tmp_path / "logs"),
               LOGBRIDGE_STATE_DIR=str(tmp_path / "state"), PYTHONPATH=str(ROOT),
               LOGBRIDGE_OUTPUT_MODULES="tests.support.no_such_output")
    proc = subprocess.run([sys.executable, "-m", "driver"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1
    assert "LOGBRIDGE_OUTPUT_MODULES: cannot load an output from 'tests.support.no_such_output'" in proc.stderr
