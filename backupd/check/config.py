"""The config itself: combinations of keys that cannot work whatever the host, by the rules
`backupd check-config` and the daemon's start and reload refuse them with
(config_checks.impossible_combinations)."""

from __future__ import annotations

from backupd.check.result import Result, fail
from backupd.config import Config
from backupd.config_checks import impossible_combinations


def check(config: Config) -> list[Result]:
    """One FAIL per impossible combination, named by the key its line starts with."""
    results = []
    for problem in impossible_combinations(config):
        key = problem.split(" = ", 1)[0]
        results.append(
            fail(
                f"config.combination[{key}]",
                problem,
                f"change {key} or the key it conflicts with, as the line says; the daemon "
                "refuses to start until then",
            )
        )
    return results
