"""promtool accepts the shipped alert rules and their unit tests pass (fire and stay quiet).

The unit tests run on the shipped files exactly as an operator extending the alerts would
(`promtool test rules tests/prometheus/backupd.rules.test.yml`), annotations included.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.monitoring import ROOT, RULE_TESTS, RULES, dashboard_exprs
from tests.tools import require_tool

pytestmark = pytest.mark.integration


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = require_tool("promtool", "prometheus")
    return subprocess.run([tool, *args], capture_output=True, text=True, check=False, timeout=120)


def test_check_rules() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_rule_unit_tests_on_the_shipped_files() -> None:
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def run_broken_rules(
    tmp_path: Path, rules_text: str, keep: str
) -> subprocess.CompletedProcess[str]:
    """promtool test rules, tests named `keep`, on changed rules laid out like the repository."""
    rules = tmp_path / RULES.relative_to(ROOT)
    tests_file = tmp_path / RULE_TESTS.relative_to(ROOT)
    rules.parent.mkdir(parents=True)
    tests_file.parent.mkdir(parents=True)
    rules.write_text(rules_text)
    tests = yaml.safe_load(RULE_TESTS.read_text())
    tests["tests"] = [case for case in tests["tests"] if keep in case["name"]]
    tests_file.write_text(yaml.safe_dump(tests))
    return promtool("test", "rules", str(tests_file))


def test_rule_unit_tests_catch_a_broken_rule(tmp_path: Path) -> None:
    """A rule whose threshold is far off fails its tests: the tests do test."""
    broken = RULES.read_text().replace("> 300\n", "> 30000\n")
    assert broken != RULES.read_text()
    result = run_broken_rules(tmp_path, broken, keep="recovery point")
    assert result.returncode != 0
    assert "BackupdRecoveryPointStale" in result.stdout + result.stderr


def test_snapshot_age_rule_follows_the_schedule(tmp_path: Path) -> None:
    """The old fixed 6-hour threshold fails the daily and hourly schedule cases."""
    fixed = RULES.read_text().replace(
        "/ backupd_snapshot_expected_interval_seconds > 2", "/ 21600 > 2"
    )
    assert fixed != RULES.read_text()
    result = run_broken_rules(tmp_path, fixed, keep="schedule")
    assert result.returncode != 0
    assert "daily schedule" in result.stdout + result.stderr
    assert "hourly schedule" in result.stdout + result.stderr


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Each dashboard query, as a recording rule, passes `promtool check rules`."""
    exprs = list(dashboard_exprs())
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard_query_{n}", "expr": expr.replace("$instance", ".*")}
                    for n, expr in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout
