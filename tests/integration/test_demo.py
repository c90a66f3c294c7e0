"""The README's demo command keeps working: every step of the tour succeeds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(900)  # the tour runs five drills (restore, before, skip, tables, EBS)
def test_demo_runs_end_to_end(scratch: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tests.testbed.demo", "--once", "--base", str(scratch / "demo")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "healthy" in result.stdout
    assert "demo: done" in result.stdout
    assert result.stdout.count("completed (application)") == 2  # local, then EBS (moto)
    assert not (scratch / "demo" / "data").is_mount()
    assert "demo: proof" in result.stdout and " == restored " in result.stdout
    # "Undo an accident": right before it, everything but it, the table dump, the inverse
    assert result.stdout.count(" == restored ") == 3 and " != restored " not in result.stdout
    assert "-- target: before " in result.stdout and "-- backupd undo preview" in result.stdout
    assert "restore record: " in result.stdout and "replay with: backupctl " in result.stdout
    assert "object cache " in result.stdout  # plan and drill shared the restore cache
