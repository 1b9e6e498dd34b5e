"""The metrics endpoint accounts for every line: received = written + dropped, and per sink acked + dropped =
received once quiet; counts survive a plugin restart."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.plugin_harness import ROOT, FakeLogger, PluginProcess, wait_for
from tests.process.test_forward_process import write_numbers


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
    # json.log does not wait for the aggregator (counters show saved counts: poll, they lag by one save)
    m = wait_for(lambda: (lambda m: m if total(m, "logbridge_lines_written_total") == 2000 else None)(
        scrape(p.addr)), timeout=30)
    assert m, scrape(p.addr)
    assert total(m, "logbridge_sink_up", sink="forward") == 0
    assert total(m, "logbridge_backlog_bytes", sink="forward") > 0
    out = tmp_path / "received.jsonl"
    receiver = subprocess.Popen([sys.executable, "-m", "driver.receiver", "--listen", f"tcp://127.0.0.1:{port}",
                                 "--output", str(out)], cwd=ROOT)
    try:
        logger.stop()
        m = wait_for(lambda: (lambda m: m if total(m, "logbridge_sink_lines_acked_total") + total(
            m, "logbridge_sink_lines_dropped_total") == total(m, "logbridge_lines_received_total") == 2000 else None)(
            scrape(p.addr)), timeout=30)
        assert m, scrape(p.addr)
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
    # Saved counts lag the live ones by a save (the dead forwarder saves once a second while it retries): poll.
    m = wait_for(lambda: (lambda m: m if total(m, "logbridge_lines_written_total") == 25000 and total(
        m, "logbridge_sink_lines_dropped_total", sink="forward", reason="journal_cap") > 10000 else None)(
        scrape(p.addr)), timeout=30)
    assert m, scrape(p.addr)  # the forwarder lost what the cap gave up; json.log lost nothing
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


def counters(m: dict) -> dict:
    return {key: v for key, v in m.items() if key[0].endswith("_total")}


def scrape_when_up(addr: str) -> dict:
    def up():
        try:
            return scrape(addr)
        except requests.ConnectionError:
            return None
    m = wait_for(up, timeout=30)
    assert m is not None, "metrics endpoint did not come up"
    return m


def kill_three_times_mid_stream(p: PluginProcess, loggers: list[FakeLogger], lines: int) -> int:
    """Write ``lines`` numbered lines per logger and SIGKILL the plugin once some were acknowledged, three times;
    after each restart no counter series is below its last scrape before the kill (Prometheus would take it for
    a reset). Returns the lines written per logger."""
    n = 0
    for kill in range(3):
        for lg in loggers:
            write_numbers(lg, n + 1, n + lines)
        n += lines
        acked_at_start = total(scrape_when_up(p.addr), "logbridge_sink_lines_acked_total")
        assert wait_for(lambda a=acked_at_start: total(scrape(p.addr), "logbridge_sink_lines_acked_total") > a,
                        timeout=30), "nothing acked in this run"
        before = counters(scrape(p.addr))
        p.kill()
        p.start()
        after = counters(scrape_when_up(p.addr))
        went_back = {f"{name}{dict(labels)}": (v, after.get((name, labels), 0))
                     for (name, labels), v in before.items() if after.get((name, labels), 0) < v}
        assert not went_back, f"kill {kill + 1}: counters below their last scrape (before, after): {went_back}"
    for lg in loggers:
        lg.stop()
    return n


def settled_acked(p: PluginProcess, want: int) -> dict:
    """The metrics once the outputs' acked lines reached ``want`` (counts lag a save: poll)."""
    m = wait_for(lambda: (lambda m: m if total(m, "logbridge_sink_lines_acked_total") >= want else None)(
        scrape(p.addr)), timeout=30)
    return m or scrape(p.addr)


def test_counters_never_go_back_across_sigkills_and_acked_is_what_the_receiver_got(metrics_plugin, tmp_path):
    """issue 14.1 / 12.2: SIGKILL mid-stream, three times. No counter goes back, and once quiet the forward sink's
    acked lines are the lines the receiver acknowledged, each once, over the whole lifetime."""
    from tests.support.receiver import ReceiverProcess

    p = metrics_plugin
    rcv = ReceiverProcess(tmp_path / "receiver", "--ack-delay", "0.05").start()
    loggers = [FakeLogger(p, config={"fluentd-address": rcv.address, "fluentd-retry-wait": "100ms"})
               for _ in range(2)]
    try:
        for lg in loggers:
            lg.start()
        n = kill_three_times_mid_stream(p, loggers, 20000)

        def delivered():
            return {(r["record"]["container_id"], r["record"]["log"]) for r in rcv.records()}

        assert wait_for(lambda: len(delivered()) == 2 * n, timeout=90), len(delivered())
        m = settled_acked(p, 2 * n)
        print(f"\n[forward, 3 SIGKILLs] receiver: {len(rcv.records())} records, {len(delivered())} distinct; "
              f"acked {total(m, 'logbridge_sink_lines_acked_total')}")
        assert total(m, "logbridge_sink_lines_acked_total") == len(delivered()) == 2 * n
        assert total(m, "logbridge_lines_received_total") == total(m, "logbridge_lines_written_total") == 2 * n
    finally:
        for lg in loggers:
            lg.close()
        rcv.stop()


class LokiInThread:
    """tests/support/loki.py's receiver on its own event loop in a thread, for a plugin that is a process."""

    def __init__(self) -> None:
        from tests.support.loki import LokiReceiver

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.receiver = LokiReceiver()
        self.url = self.call(self.receiver.start())

    def call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def entries(self) -> list[tuple]:
        """(stream labels, line) of every entry Loki stored, duplicates included."""
        async def read():
            return [(labels, line) for labels, s in self.receiver.streams().items() for _, line, _ in s.entries]
        return self.call(read())

    def stop(self) -> None:
        self.call(self.receiver.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def test_loki_counters_never_go_back_across_sigkills_and_acked_is_what_loki_stored(metrics_plugin):
    """As the forward test, for the Loki output: its acked lines end equal to the lines Loki stored, each once."""
    p = metrics_plugin
    loki = LokiInThread()
    loggers = [FakeLogger(p, config={"loki-url": loki.url, "loki-batch-wait": "100ms",
                                     "loki-min-backoff": "100ms"}) for _ in range(2)]
    try:
        for lg in loggers:
            lg.start()
        n = kill_three_times_mid_stream(p, loggers, 20000)
        assert wait_for(lambda: len(set(loki.entries())) == 2 * n, timeout=90), len(set(loki.entries()))
        m = settled_acked(p, 2 * n)
        print(f"\n[loki, 3 SIGKILLs] Loki: {len(loki.entries())} entries, {len(set(loki.entries()))} distinct; "
              f"acked {total(m, 'logbridge_sink_lines_acked_total')}")
        assert total(m, "logbridge_sink_lines_acked_total", sink="loki") == len(set(loki.entries())) == 2 * n
        assert total(m, "logbridge_lines_received_total") == total(m, "logbridge_lines_written_total") == 2 * n
    finally:
        for lg in loggers:
            lg.close()
        loki.stop()


def test_prometheus_increase_across_sigkills_is_the_lines_written_meanwhile(metrics_plugin, tmp_path):
    """issue 12.2: a real Prometheus scrapes while the plugin is SIGKILLed twice. It sees no counter reset, and
    increase() over the restarts equals the lines written (and forwarded) meanwhile: a reset would add the whole
    count again."""
    from tests.support.prometheus import Prometheus
    from tests.support.receiver import ReceiverProcess

    p = metrics_plugin
    prom = Prometheus([p.addr]).start()
    rcv = ReceiverProcess(tmp_path / "receiver").start()
    logger = FakeLogger(p, config={"fluentd-address": rcv.address, "fluentd-retry-wait": "100ms"})
    names = ("lines_received", "lines_written", "sink_lines_acked")
    try:
        prom.wait_scrape_after(0)
        logger.start()

        def now() -> dict[str, float | None]:
            prom.wait_scrape_after(time.time())
            return {name: prom.value(f"sum(logbridge_{name}_total)") for name in names}

        def stored(want: int) -> bool:
            return set(now().values()) == {want}

        written = 10000
        write_numbers(logger, 1, written)
        assert wait_for(lambda: stored(written), timeout=60), now()
        since = prom.wait_scrape_after(time.time())  # a sample of the plateau: the range starts on it
        for _ in range(2):
            write_numbers(logger, written + 1, written + 10000)
            written += 10000
            assert wait_for(lambda w=written: stored(w), timeout=60), (written, now())  # Prometheus has them: kill
            p.kill()
            p.start()
        write_numbers(logger, written + 1, written + 10000)
        written += 10000
        assert wait_for(lambda: stored(written), timeout=60), (written, now())
        until = prom.last_scrape()
        # The range [since, until] starts and ends on samples, so Prometheus 2 extrapolates nothing: exact figures.
        window, at = f"{round((until - since) * 1000)}ms", str(until)
        figures = {(what, name): float(prom.api("query", query=f"sum({what}(logbridge_{name}_total[{window}]))",
                                                time=at)["result"][0]["value"][1])
                   for what in ("increase", "resets") for name in names}
        print(f"\n[prometheus, 2 SIGKILLs] {written - 10000} lines over the range: {figures}")
        assert figures == {**{("increase", name): written - 10000 for name in names},
                           **{("resets", name): 0 for name in names}}
    finally:
        logger.close()
        rcv.stop()
        prom.stop()


def silent_destination(kind: str) -> tuple[socket.socket, int]:
    """A port where nobody listens ("refused") or where the kernel completes the handshake and nobody ever reads
    or answers ("never reads"); the socket stays open until closed."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    if kind == "never reads":
        silent.listen(1)
    port = silent.getsockname()[1]
    if kind == "refused":
        silent.close()
    return silent, port


@pytest.mark.parametrize(("sink", "destination"), [("forward", "refused"), ("forward", "never reads"),
                                                   ("loki", "refused"), ("loki", "never reads")])
def test_a_stopped_containers_backlog_is_dropped_after_finished_max_age(metrics_plugin, sink, destination):
    """issue 14.4: a destination that never answers keeps a finished container's output only for finished-max-age
    (here 2 s); then its lines are counted as dropped, the container leaves the metrics and the health, and a
    restart does not bring it back. json.log has every line."""
    p = metrics_plugin
    silent, port = silent_destination(destination)
    config = {"fluentd-address": f"tcp://127.0.0.1:{port}", "fluentd-retry-wait": "100ms"} if sink == "forward" \
        else {"loki-url": f"http://127.0.0.1:{port}/loki/api/v1/push", "loki-min-backoff": "100ms",
              "loki-timeout": "1s"}
    try:
        logger = FakeLogger(p, config={**config, "finished-max-age": "2s"})
        logger.start()
        for i in range(300):
            logger.log(b"line %d" % i)
        m = wait_for(lambda: (lambda m: m if total(m, "logbridge_lines_written_total") == 300 else None)(
            scrape(p.addr)))
        assert m and total(m, "logbridge_sink_up", sink=sink) == 0 and total(m, "logbridge_containers_active") == 1
        logger.stop()  # the container ends (--rm: dockerd's StopLogging): its backlog has 2 s

        def gone():
            m = scrape(p.addr)
            return m if total(m, "logbridge_containers_active") == 0 else None

        m = wait_for(gone, timeout=60)
        assert m, scrape(p.addr)
        assert not [key for key in m if key[0] in ("logbridge_sink_up", "logbridge_backlog_bytes",
                                                   "logbridge_sink_lag_seconds")]
        assert total(m, "logbridge_sink_lines_dropped_total", sink=sink, reason="finished_max_age") == 300
        assert total(m, "logbridge_sink_lines_acked_total") == 0
        assert requests.get(f"http://{p.addr}/healthz", timeout=5).json()["containers"] == 0
        assert len(p.log_file(logger.container_id).read_text().splitlines()) == 300
        p.kill()
        p.start()
        m = scrape_when_up(p.addr)
        assert total(m, "logbridge_containers_active") == 0
        assert total(m, "logbridge_sink_lines_dropped_total", sink=sink, reason="finished_max_age") == 300
        assert "dropped: not delivered within finished-max-age" in p.stdout.read_text()
    finally:
        silent.close()


def test_the_bound_counts_from_the_containers_end_across_a_plugin_kill(metrics_plugin):
    """The end is saved with the output's cursor: a plugin killed after the container ended resumes the backlog
    and drops it when the age is reached, not a whole max-age after the restart."""
    p = metrics_plugin
    logger = FakeLogger(p, config={"fluentd-address": f"tcp://127.0.0.1:{free_port()}",  # nobody listens
                                   "fluentd-retry-wait": "100ms", "finished-max-age": "1h"})
    logger.start()
    for i in range(50):
        logger.log(b"line %d" % i)
    logger.stop()
    cursor = p.state_dir / "containers" / logger.container_id / "cursors" / "forward.json"

    def finished_at():
        try:
            return json.loads(cursor.read_text())["extra"].get("finished_at")
        except (FileNotFoundError, ValueError, KeyError):
            return None

    assert wait_for(finished_at, timeout=30)
    p.kill()
    # Make it look an hour old (what a long outage does), then restart: it must go at once.
    data = json.loads(cursor.read_text())
    data["extra"]["finished_at"] -= 3600
    cursor.write_text(json.dumps(data))
    p.start()
    m = wait_for(lambda: (lambda m: m if total(m, "logbridge_sink_lines_dropped_total",
                                                 reason="finished_max_age") == 50 else None)(scrape_when_up(p.addr)),
                 timeout=30)
    assert m, scrape(p.addr)
    assert wait_for(lambda: total(scrape(p.addr), "logbridge_containers_active") == 0, timeout=30)
