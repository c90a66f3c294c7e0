"""promtool accepts the shipped alert rules and their unit tests pass (fire and stay quiet).

The unit tests compare labels only, so they run on a copy of the rules without annotations;
`promtool check rules` on the original validates the annotation templates.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.monitoring import RULE_TESTS, RULES, dashboard_exprs
from tests.tools import require_tool

pytestmark = pytest.mark.integration


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = require_tool("promtool", "prometheus")
    return subprocess.run([tool, *args], capture_output=True, text=True, check=False, timeout=120)


def test_check_rules() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def run_rule_tests(
    tmp_path: Path, rules_text: str, keep: str = ""
) -> subprocess.CompletedProcess[str]:
    """promtool test rules on these rules (annotations dropped), tests named `keep` or all."""
    rules = yaml.safe_load(rules_text)
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    tests = yaml.safe_load(RULE_TESTS.read_text())
    tests["tests"] = [case for case in tests["tests"] if keep in case["name"]]
    (tmp_path / RULES.name).write_text(yaml.safe_dump(rules))
    (tmp_path / RULE_TESTS.name).write_text(yaml.safe_dump(tests))
    return promtool("test", "rules", str(tmp_path / RULE_TESTS.name))


def test_rule_unit_tests(tmp_path: Path) -> None:
    result = run_rule_tests(tmp_path, RULES.read_text())
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_catch_a_broken_rule(tmp_path: Path) -> None:
    """A rule whose threshold is far off fails its tests: the tests do test."""
    broken = RULES.read_text().replace("> 300\n", "> 30000\n")
    assert broken != RULES.read_text()
    result = run_rule_tests(tmp_path, broken, keep="recovery point")
    assert result.returncode != 0
    assert "BackupdRecoveryPointStale" in result.stdout + result.stderr


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
