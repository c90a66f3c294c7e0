"""What the shipped monitoring files reference: metric names in PromQL, known metric names."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

from backupd.metrics import Metrics

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "packaging" / "prometheus" / "backupd.rules.yml"
RULE_TESTS = ROOT / "tests" / "prometheus" / "backupd.rules.test.yml"
DASHBOARD = ROOT / "packaging" / "grafana" / "backupd.json"
INTERFACE = ROOT / "docs" / "INTERFACE.md"
OPERATIONS = ROOT / "docs" / "operations.md"

_METRIC = re.compile(r"\b(backupd_[a-z0-9_]+|up)\b")
_HISTOGRAM_PARTS = ("_bucket", "_sum", "_count")


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def dashboard_exprs() -> Iterator[str]:
    def walk(panels: list[dict[str, Any]]) -> Iterator[str]:
        for panel in panels:
            for target in panel.get("targets", []):
                yield target["expr"]
            yield from walk(panel.get("panels", []))

    yield from walk(json.loads(DASHBOARD.read_text())["panels"])


def metrics_in(expr: str) -> set[str]:
    """Metric names a PromQL expression reads, histogram parts folded onto their family."""
    return {_family(name) for name in _METRIC.findall(expr)}


def _family(name: str) -> str:
    for part in _HISTOGRAM_PARTS:
        if name.endswith(part) and name.removesuffix(part).endswith("_seconds"):
            return name.removesuffix(part)
    return name


def known_metrics() -> set[str]:
    """Names in INTERFACE.md's metric sections plus what the daemon's registry exports."""
    known = {"up"}
    for section in re.split(r"^#+ ", INTERFACE.read_text(), flags=re.M):
        if section.startswith("Metrics"):
            for token in re.findall(r"`([a-z][a-z0-9_]*)", section):
                known.add(token if token.startswith("backupd_") else f"backupd_{token}")
    for family in Metrics(CollectorRegistry()).registry.collect():
        known.update(sample.name for sample in family.samples)
    return known
