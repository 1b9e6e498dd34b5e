"""The monitoring examples hang together: the PLG stack mounts the dashboard, the Prometheus config and the rules;
Prometheus's config is valid; the dashboard uses only the families logbridge exposes (tests/metric_families.py).
The dashboard's expressions run on a real Prometheus in tests/e2e/test_prometheus.py."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.metric_families import BUILTIN, FAMILIES, names_in

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
DASHBOARD = EXAMPLES / "grafana" / "logbridge-dashboard.json"


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: run scripts/install-deps.sh (Debian package {package})", pytrace=False)
    return path


def test_prometheus_config_is_valid_and_loads_the_rules():
    config = EXAMPLES / "prometheus" / "prometheus.yml"
    r = subprocess.run([tool("promtool", "prometheus"), "check", "config", str(config)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 rule files found" in r.stdout and "7 rules found" in r.stdout


def test_plg_stack_provisions_prometheus_and_the_dashboard():
    compose = [tool("docker-compose", "docker-compose"), "-f", str(EXAMPLES / "plg" / "docker-compose.yml")]
    r = subprocess.run([*compose, "config"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    for path in ("prometheus/prometheus.yml", "prometheus/logbridge-rules.yml", "grafana/logbridge-dashboard.json",
                 "plg/grafana/datasources.yaml", "plg/grafana/dashboards.yaml"):
        assert str(EXAMPLES / path) in r.stdout, f"{path} is not mounted by examples/plg/docker-compose.yml"
    datasources = (EXAMPLES / "plg" / "grafana" / "datasources.yaml").read_text()
    assert "type: prometheus" in datasources


def test_dashboard_uses_only_logbridge_families():
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    exprs += [v["query"]["query"] for v in dash["templating"]["list"] if v["type"] == "query"]
    used = set().union(*(names_in(e) for e in exprs)) - BUILTIN
    assert used <= set(FAMILIES), used - set(FAMILIES)
    # what the issue asks the dashboard to show
    for family in ("logbridge_sink_lines_acked_total", "logbridge_sink_lag_seconds", "logbridge_backlog_bytes",
                   "logbridge_lines_dropped_total", "logbridge_process_pss_bytes"):
        assert family in used
    panel_ids = [p["id"] for p in dash["panels"]]
    assert len(panel_ids) == len(set(panel_ids))
