"""A real Prometheus scrapes logbridge (legacy plugin, METRICS_ADDR on loopback) on the real dockerd: the accounting
identities as PromQL gives them, the exposition under `promtool check metrics`, every dashboard expression and
every alert rule evaluated against what Prometheus stored.

Nothing here reads the exposition to assert a figure: every figure comes from Prometheus's HTTP API, read once it
holds a scrape newer than the moment the condition was checked (Prometheus.query_fresh)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.conftest import unique_name
from tests.metric_families import BUILTIN, FAMILIES, names_in
from tests.support import LegacyPlugin, SupportError, wait_for
from tests.support.prometheus import Prometheus
from tests.support.receiver import ReceiverProcess, free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "examples" / "prometheus" / "logbridge-rules.yml"
DASHBOARD = ROOT / "examples" / "grafana" / "logbridge-dashboard.json"
# what the containers of `monitored` print: (command, stdout lines, stderr lines)
WORKLOADS = [("seq 1 3000; seq 1 1000 >&2", 3000, 1000), ("seq 1 2000", 2000, 0)]
LINES = sum(out + err for _, out, err in WORKLOADS)


@pytest.fixture(scope="module")
def monitored(dockerd, docker_run, tmp_path_factory):
    """logbridge with METRICS_ADDR, a forward receiver every container sends to, Prometheus scraping the plugin
    every second with the alert rules loaded; the WORKLOADS have run and exited."""
    base = tmp_path_factory.mktemp("prom")
    addr = f"127.0.0.1:{free_port()}"
    plugin = LegacyPlugin(unique_name("p"), base / "logs", base / "state", {"METRICS_ADDR": addr})
    receiver = ReceiverProcess(base / "recv")
    prom = Prometheus([addr], rule_files=[RULES])
    try:
        plugin.start()
        receiver.start()
        prom.start()
        prom.wait_scrape_after(0)
        for cmd, _, _ in WORKLOADS:
            r = docker_run(plugin.driver, "sh", "-c", cmd, log_opts={"fluentd-address": receiver.address})
            assert r.rc == 0, r.stderr
        receiver.wait_records(LINES, timeout=60)
        yield plugin, prom, receiver, addr
    finally:
        try:
            dockerd.remove_containers(log_driver=plugin.name)
        finally:
            plugin.stop()
            receiver.stop()
            prom.stop()


def quiet(prom: Prometheus) -> bool:
    """Every container finished (no pipeline left) and all its lines are counted, in a scrape newer than now."""
    return prom.query_fresh("sum(logbridge_containers_active)") == 0 and \
        prom.value("sum(logbridge_lines_written_total)") >= LINES and \
        prom.value("sum(logbridge_sink_lines_acked_total)") >= LINES


def test_identities_from_promql_once_quiet(monitored):
    _, prom, receiver, _ = monitored
    wait_for("containers quiet in Prometheus", lambda: quiet(prom), 60, interval=0.2)
    prom.wait_scrape_after(time.time())  # every figure below from a scrape after quiet

    received = prom.value("sum(logbridge_lines_received_total)")
    assert received == LINES
    assert prom.value('sum(logbridge_lines_received_total{stream="stderr"})') == 1000
    # received = written + dropped
    assert prom.value("sum(logbridge_lines_received_total) - sum(logbridge_lines_written_total)"
                      " - sum(logbridge_lines_dropped_total)") == 0
    # per output: acked + dropped = received (every container forwards); an output no container uses counts 0
    per_sink = prom.query("sum by (sink) (logbridge_sink_lines_acked_total)"
                          " + sum by (sink) (logbridge_sink_lines_dropped_total)")
    totals = {r["metric"]["sink"]: float(r["value"][1]) for r in per_sink}
    assert totals.pop("forward") == received
    assert set(totals.values()) <= {0.0}, totals
    assert len(receiver.records()) == LINES


def test_exposition_is_clean_for_promtool(monitored):
    _, _, _, addr = monitored
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=5) as r:
        text = r.read()
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: run scripts/install-deps.sh (Debian package prometheus)"
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=30)
    assert check.returncode == 0 and not check.stdout.strip() and not check.stderr.strip(), \
        check.stdout + check.stderr


def test_the_families_the_examples_use_are_stored(monitored):
    """tests/metric_families.py against what Prometheus stored (a rename in driver/metrics.py fails here)."""
    _, prom, _, _ = monitored
    stored = prom.stored_names()
    missing = set(FAMILIES) - stored
    # per-container families exist only while a container has a pipeline: the dashboard test below has one
    assert missing <= {"logbridge_sink_up", "logbridge_sink_lag_seconds", "logbridge_backlog_bytes",
                       "logbridge_journal_bytes", "logbridge_journal_max_bytes"}, (missing, sorted(stored))


def grafana_to_promql(expr: str) -> str:
    """A dashboard expression as Grafana would send it with every template variable at All."""
    expr = expr.replace("$__rate_interval", "1m").replace("$__interval", "1m")
    return re.sub(r"\$\{?(\w+)\}?", ".*", expr)


def dashboard_expressions() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [(p["title"], t["expr"]) for p in dash["panels"] for t in p["targets"]]
    for var in dash["templating"]["list"]:
        if var["type"] == "query":  # label_values(selector, label): the selector is the PromQL part
            inner = re.fullmatch(r"label_values\((.*), *\w+\)", var["query"]["query"])
            exprs.append((f"variable {var['name']}", inner.group(1)))
    return exprs


@pytest.fixture
def live_container(monitored, dockerd, docker_run):
    """A running container whose forward output is down: every per-container series exists (backlog, lag,
    sink_up = 0, journal bytes) while the test queries."""
    plugin, prom, _, _ = monitored
    dead = f"tcp://127.0.0.1:{free_port()}"
    r = docker_run(plugin.driver, "sh", "-c", "seq 1 100; exec sleep 3600", extra_args=("-d",),
                   log_opts={"fluentd-address": dead, "fluentd-retry-wait": "100ms"})
    assert r.rc == 0, r.stderr
    try:
        wait_for("the live container in Prometheus",
                 lambda: prom.query_fresh("sum(logbridge_backlog_bytes{sink=\"forward\"})"), 30, interval=0.2)
        yield r.container_id
    finally:
        dockerd.docker("rm", "-f", r.container_id, check=False)


def test_every_dashboard_expression_runs_on_prometheus(monitored, live_container):
    _, prom, _, _ = monitored
    stored = prom.stored_names()
    exprs = dashboard_expressions()
    assert len(exprs) >= 12
    for title, expr in exprs:
        names = names_in(expr)
        assert names, (title, expr)
        assert names - BUILTIN <= set(FAMILIES), (title, names - set(FAMILIES))
        assert names - BUILTIN <= stored, (title, names - stored)
        try:
            result = prom.query(grafana_to_promql(expr))
        except SupportError as e:
            pytest.fail(f"{title}: {e}")
        assert result, f"{title}: {grafana_to_promql(expr)} returned nothing"


def test_alert_rules_evaluate_on_real_series(monitored, live_container):
    """Prometheus evaluates every rule without error, and the output-down rule goes pending for the live
    container whose aggregator is missing (it fires only after its 5 minutes)."""
    _, prom, _, _ = monitored

    def pending() -> list:
        return prom.query('ALERTS{alertname="LogbridgeOutputDown", alertstate="pending"}')

    got = wait_for("LogbridgeOutputDown to be pending", pending, 30, interval=0.2)
    assert got[0]["metric"]["sink"] == "forward"
    rules = [r for g in prom.api("rules")["groups"] for r in g["rules"]]
    assert len(rules) == 7
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]
    for r in rules:
        assert names_in(r["query"]) - BUILTIN <= set(FAMILIES), r["name"]
    firing = [r["name"] for r in rules if r["state"] == "firing"]
    assert firing == [], firing
