"""The alert rules (examples/prometheus/logbridge-rules.yml) under `promtool test rules`: each alert has a firing
case that is still pending before its `for:` ends, and a quiet case (tests/unit/data/logbridge-rules-test.yml)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.metric_families import BUILTIN, FAMILIES, names_in

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "examples" / "prometheus" / "logbridge-rules.yml"
RULE_TESTS = ROOT / "tests" / "unit" / "data" / "logbridge-rules-test.yml"
ALERTS = ["LogbridgeDown", "LogbridgeLinesDropped", "LogbridgeOutputDown", "LogbridgeOutputLagging",
          "LogbridgeJournalNearCap", "LogbridgeDiskFull", "LogbridgeRestarted"]


def promtool(*args: str) -> subprocess.CompletedProcess:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool not found: run scripts/install-deps.sh (Debian package prometheus)", pytrace=False)
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60)


def run_rule_tests(rules: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """The test file against `rules` (its rule_files entry pointed there)."""
    test_file = tmp_path / "rules-test.yml"
    test_file.write_text(RULE_TESTS.read_text().replace("../../../examples/prometheus/logbridge-rules.yml",
                                                        str(rules)))
    return promtool("test", "rules", str(test_file))


def test_rules_are_valid_and_every_alert_has_a_runbook():
    r = promtool("check", "rules", str(RULES))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{len(ALERTS)} rules found" in r.stdout
    text = RULES.read_text()
    assert re.findall(r"- alert: (\w+)", text) == ALERTS
    assert text.count("runbook:") == len(ALERTS)


def test_rules_use_only_the_families_logbridge_exposes():
    assert names_in(RULES.read_text()) - BUILTIN <= set(FAMILIES)


def test_promtool_rule_tests_pass(tmp_path):
    r = run_rule_tests(RULES, tmp_path)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("alert", ALERTS)
def test_each_firing_case_exercises_the_for_clause(alert, tmp_path):
    """With this alert's `for:` gone, its pending check must fail: the test file would notice a rule that fires
    at once."""
    text = RULES.read_text()
    block = re.search(rf"- alert: {alert}\n(?:.*\n)*?\s+for: \S+\n", text)
    assert block, f"{alert} has no for:"
    mutated = tmp_path / "mutated-rules.yml"
    mutated.write_text(text.replace(block.group(0), re.sub(r"for: \S+", "for: 0s", block.group(0))))
    r = run_rule_tests(mutated, tmp_path)
    assert r.returncode != 0
    assert f"alertname: {alert}," in r.stdout + r.stderr
