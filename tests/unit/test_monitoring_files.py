"""The shipped alert rules and dashboard read only metrics the daemon documents or exports."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.monitoring import (
    DASHBOARD,
    OPERATIONS,
    RULE_TESTS,
    alert_rules,
    dashboard_exprs,
    known_metrics,
    metrics_in,
)


def test_metric_name_extraction() -> None:
    expr = (
        "rate(backupd_freeze_duration_seconds_bucket{le='1.0'}[5m]) + "
        "backupd_upload_errors_total - up"
    )
    assert metrics_in(expr) == {
        "backupd_freeze_duration_seconds",
        "backupd_upload_errors_total",
        "up",
    }
    assert "backupd_snapshots_total" in known_metrics()
    assert "backupd_no_such_metric" not in known_metrics()


def test_alert_rules_read_known_metrics() -> None:
    known = known_metrics()
    for rule in alert_rules():
        names = metrics_in(rule["expr"])
        assert names, rule["alert"]
        assert names <= known, (rule["alert"], names - known)


def test_dashboard_queries_read_known_metrics() -> None:
    known = known_metrics()
    exprs = list(dashboard_exprs())
    assert len(exprs) >= 10
    for expr in exprs:
        names = metrics_in(expr)
        assert names and names <= known, (expr, names - known)


def test_every_alert_documented_with_a_runbook_anchor() -> None:
    headings = {
        line.lstrip("#").strip().lower()
        for line in OPERATIONS.read_text().splitlines()
        if line.startswith("#")
    }
    for rule in alert_rules():
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"], rule["alert"]
        anchor = notes["runbook_url"].rpartition("#")[2]
        assert notes["runbook_url"].rpartition("#")[0].endswith("docs/operations.md")
        assert anchor == rule["alert"].lower(), rule["alert"]
        assert anchor in headings, f"docs/operations.md has no heading {rule['alert']}"
        assert rule["labels"]["severity"] in ("critical", "warning")


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_every_alert_has_firing_and_quiet_cases(rule: dict[str, object]) -> None:
    fires = quiet = False
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        instances = set(re.findall(r'instance="([^"]+)"', str(case["input_series"])))
        for check in case["alert_rule_test"]:
            if check["alertname"] != rule["alert"]:
                continue
            firing = {alert["exp_labels"].get("instance") for alert in check["exp_alerts"]}
            fires = fires or bool(firing)
            quiet = quiet or not firing or bool(instances - firing)
    assert fires and quiet, rule["alert"]


def test_dashboard_structure() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    variables = {item["name"] for item in dashboard["templating"]["list"]}
    assert {"datasource", "instance"} <= variables
    for panel in panels:
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), panel["title"]
        refs = [target["refId"] for target in panel.get("targets", [])]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert 'instance=~"$instance"' in target["expr"], panel["title"]
