"""The unit's sandbox: `systemd-analyze security --offline=true` exposure stays <= 6.0."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.tools import require_tool

pytestmark = pytest.mark.integration

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "backupd.service"
TARGET = 6.0


def exposure(unit: Path) -> tuple[float, str]:
    tool = require_tool("systemd-analyze", "systemd")
    result = subprocess.run(
        [tool, "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert found, result.stdout + result.stderr
    return float(found.group(1)), result.stdout


def test_exposure_within_target() -> None:
    score, report = exposure(UNIT)
    print(f"systemd-analyze security exposure for backupd.service: {score}")
    assert score <= TARGET, report


def test_exposure_measures_the_sandbox(tmp_path: Path) -> None:
    """Without the sandbox lines the same unit scores far worse: the measure is live."""
    bare = tmp_path / "backupd.service"
    keep = ("[", "Type=", "Exec", "Description=")
    bare.write_text(
        "\n".join(line for line in UNIT.read_text().splitlines() if line.startswith(keep))
    )
    bare_score, _ = exposure(bare)
    score, _ = exposure(UNIT)
    assert bare_score > TARGET > score


def test_runs_unprivileged_with_one_capability() -> None:
    text = UNIT.read_text()
    for line in (
        "User=backupd",
        "Group=backupd",
        "CapabilityBoundingSet=CAP_SYS_ADMIN CAP_CHOWN",
        "AmbientCapabilities=CAP_SYS_ADMIN CAP_CHOWN",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "SystemCallFilter=@system-service",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
    ):
        assert line in text.splitlines(), line
