"""The daemon's drill service: scheduled only when enabled, one at a time, results exported."""

from __future__ import annotations

import threading
from pathlib import Path

from prometheus_client import CollectorRegistry

from backupd.config import Config
from backupd.restore.service import DrillService
from backupd.service import ServiceContext
from backupd.storage.filestore import FileStore


def service(tmp_path: Path, **drill: object) -> DrillService:
    config = Config.model_validate(
        {
            "daemon": {"state_dir": str(tmp_path / "state")},
            "snapshot": {"local": {"directory": str(tmp_path / "images")}},
            "drill": drill,
        }
    )
    context = ServiceContext(
        config, FileStore(tmp_path / "repo"), CollectorRegistry(), threading.Event()
    )
    return DrillService(context)


def test_disabled_by_default_and_nothing_scheduled(tmp_path: Path) -> None:
    drills = service(tmp_path)
    drills.start()
    try:
        status = drills.status()
        assert status["enabled"] is False and status["next_run_at"] is None
        assert status["summary"] == "no drill since the daemon started"
    finally:
        drills.stop()


def test_enabled_schedules_and_a_failed_drill_is_reported(tmp_path: Path) -> None:
    drills = service(tmp_path, enabled=True, schedule="0 3 * * 0", target="latest")
    drills.start()
    try:
        assert drills.status()["next_run_at"] is not None
        doc = drills.run_once()  # an empty repository: nothing to restore
        assert doc["result"] == "failed" and doc["error"]
        assert drills.warnings() and "last restore drill failed" in drills.warnings()[0]
        registry = drills.context.registry
        assert registry.get_sample_value("backupd_drills_total", {"result": "failed"}) == 1
        assert registry.get_sample_value("backupd_drill_last_success_timestamp_seconds") == 0
        assert registry.get_sample_value("backupd_drill_duration_seconds") is not None
    finally:
        drills.stop()
