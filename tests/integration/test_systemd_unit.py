"""The shipped unit passes `systemd-analyze verify` and carries the lifecycle settings."""

from __future__ import annotations

import configparser
import subprocess
from pathlib import Path

import pytest

from tests.clients import BIN_DIR

pytestmark = pytest.mark.integration

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "backupd.service"


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = tmp_path / "backupd.service"
    unit.write_text(UNIT.read_text().replace("/usr/bin/backupd", str(BIN_DIR / "backupd")))
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "backupd.service" not in result.stderr, result.stderr


def test_unit_lifecycle_settings() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    service = parser["Service"]
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert service["RestartPreventExitStatus"] == "78"
    assert service["Restart"] == "on-failure"
    assert "check-config" in service["ExecStartPre"]
    assert service["ExecStopPost"].startswith("-") and "thaw-all" in service["ExecStopPost"]
    for key in ("WatchdogSec", "RuntimeDirectory", "StateDirectory", "CacheDirectory"):
        assert service.get(key), key
    assert "PrivateDevices" not in service and "PrivateNetwork" not in service
    assert "CAP_SYS_ADMIN" in service["AmbientCapabilities"]
