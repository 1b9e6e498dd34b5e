"""The metrics endpoint accounts for every line: received = written + dropped, and per sink acked + dropped =
received once quiet; counts survive a plugin restart."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.plugin_harness import ROOT, FakeLogger, PluginProcess, wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(addr: str) -> dict[tuple, float]:
    text = requests.get(f"http://{addr}/metrics", timeout=5).text
    out = {}
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def total(metrics: dict, name: str, **labels) -> float:
    want = set(labels.items())
    return sum(v for (n, lbl), v in metrics.items() if n == name and want <= set(lbl))


@pytest.fixture
def metrics_plugin(tmp_path):
    addr = f"127.0.0.1:{free_port()}"
    p = PluginProcess(tmp_path, env={"METRICS_ADDR": addr}).start()
    p.addr = addr
    yield p
    if p.proc and p.proc.poll() is None:
        p.kill()


def test_received_equals_written_plus_dropped_and_survives_restart(metrics_plugin):
    p = metrics_plugin
    assert requests.get(f"http://{p.addr}/healthz", timeout=5).json()["status"] == "ok"
    a = FakeLogger(p)
    a.start()
    for i in range(500):
        a.log(b"%d" % i, source="stderr" if i % 5 == 0 else "stdout")
    a.write(b"\x00\x00\x10\x00 definitely not a frame")
    a.log(b"after garbage")
    a.stop()

    def settled():
        m = scrape(p.addr)
        return m if total(m, "logbridge_lines_written_total") == 501 else None

    m = wait_for(settled)
    assert m, scrape(p.addr)
    received = total(m, "logbridge_lines_received_total")
    assert total(m, "logbridge_lines_received_total", stream="stderr") == 100
    assert received == total(m, "logbridge_lines_written_total") == 501
    assert total(m, "logbridge_lines_dropped_total", reason="garbled_frame") == 1
    assert p.terminate() == 0
    p.start()
    m2 = scrape(p.addr)
    assert total(m2, "logbridge_lines_written_total") == 501  # counts come back from the state dir


def test_forward_outage_then_recovery_balances(metrics_plugin, tmp_path):
    p = metrics_plugin
    port = free_port()
    logger = FakeLogger(p, config={"fluentd-address": f"tcp://127.0.0.1:{port}", "fluentd-retry-wait": "100ms"})
    logger.start()
    for i in range(2000):
        logger.log(b"line %d" % i)
    time.sleep(1)
    m = scrape(p.addr)
    assert total(m, "logbridge_sink_up", sink="forward") == 0
    assert total(m, "logbridge_lines_written_total") == 2000  # json.log does not wait for the aggregator
    assert total(m, "logbridge_backlog_bytes", sink="forward") > 0
    out = tmp_path / "received.jsonl"
    receiver = subprocess.Popen([sys.executable, "-m", "driver.receiver", "--listen", f"tcp://127.0.0.1:{port}",
                                 "--output", str(out)], cwd=ROOT)
    try:
        logger.stop()
        assert wait_for(lambda: total(scrape(p.addr), "logbridge_sink_lines_acked_total") >= 2000, timeout=30)
        m = scrape(p.addr)
        assert total(m, "logbridge_sink_lines_acked_total") + total(m, "logbridge_sink_lines_dropped_total") == \
            total(m, "logbridge_lines_received_total") == 2000
        assert total(m, "logbridge_sink_failures_total") > 0
        assert len(out.read_text().splitlines()) >= 2000
    finally:
        receiver.terminate()
        receiver.wait(10)


def test_journal_cap_outrunning_a_dead_forwarder_is_counted(metrics_plugin):
    p = metrics_plugin
    port = free_port()  # nobody listens
    logger = FakeLogger(p, config={"fluentd-address": f"tcp://127.0.0.1:{port}", "journal-max-size": "16m"})
    logger.start()
    line = b"x" * 2000
    for _ in range(25000):  # ~50 MB of frames through a 16 MB journal
        logger.log(line)
    m = wait_for(lambda: (lambda m: m if total(m, "logbridge_lines_written_total") == 25000 else None)(scrape(p.addr)))
    assert m, scrape(p.addr)
    dropped = total(m, "logbridge_sink_lines_dropped_total", sink="forward", reason="journal_cap")
    assert dropped > 10000  # the forwarder lost what the cap gave up; json.log lost nothing
    assert total(m, "logbridge_lines_dropped_total") == 0
    assert total(m, "logbridge_journal_bytes") <= 16_000_000 + 2 * 1024 * 1024
    logger.close()


def test_record_ids_repeat_on_resend_and_differ_otherwise(metrics_plugin, tmp_path):
    """forward-record-id: a receiver that drops its connection before acking gets the batch again with the same
    ids, so an Elasticsearch output using them as _id stores each line once."""
    import json as _json

    p = metrics_plugin
    port = free_port()
    out = tmp_path / "received.jsonl"
    receiver = subprocess.Popen([sys.executable, "-m", "driver.receiver", "--listen", f"tcp://127.0.0.1:{port}",
                                 "--output", str(out), "--close-before-ack", "1"], cwd=ROOT)
    try:
        time.sleep(0.5)
        logger = FakeLogger(p, config={"fluentd-address": f"tcp://127.0.0.1:{port}", "forward-record-id": "true",
                                       "fluentd-retry-wait": "100ms"})
        logger.start()
        for i in range(300):
            logger.log(b"line %d" % i)
        logger.stop()

        def records():
            return [_json.loads(line)["record"] for line in out.read_text().splitlines()] if out.exists() else []

        # every line arrived, and the batch the receiver dropped arrived twice
        assert wait_for(lambda: len({r["log"] for r in records()}) == 300 and len(records()) > 300)
        records = records()
        by_id = {}
        for r in records:
            by_id.setdefault(r["record_id"], set()).add(r["log"])
        assert len(by_id) == 300  # resent records kept their ids (more records than ids)
        assert all(len(logs) == 1 for logs in by_id.values())  # and an id always names the same line
    finally:
        receiver.terminate()
        receiver.wait(10)
