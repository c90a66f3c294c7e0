"""The daemon's status document: what `GET /v1/status` returns and `backupctl status` shows.

Field names here are the stable `--json` contract (docs/status.md); add, never rename.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from backupd import __version__
from backupd.database import DatabaseStatus
from backupd.health import ProbeState
from backupd.server_settings import SettingRisk


@dataclass(frozen=True)
class DaemonInfo:
    started_at: float
    config_path: str
    config_loaded_at: float
    metrics_address: str = ""


def database_warnings(db: DatabaseStatus | None) -> list[str]:
    """What makes the server unprotectable even though it answers."""
    if db is None:
        return []
    warnings = []
    if not db.binlog_enabled:
        warnings.append("binary log is off: point-in-time restore is impossible (set log_bin)")
    elif db.binlog_format.upper() != "ROW":
        warnings.append(f"binlog_format is {db.binlog_format}; ROW is required for safe replay")
    return warnings


def status_warnings(
    database: ProbeState[DatabaseStatus],
    storage: ProbeState[None],
    extra_warnings: list[str] | None = None,
    risks: list[SettingRisk] | None = None,
) -> list[str]:
    """The document's `warnings`, on their own (the alarm watcher reads them every few
    seconds and needs nothing else)."""
    warnings = list(extra_warnings or [])
    if not database.up:
        warnings.append(f"database unreachable: {database.error}")
    if not storage.up:
        warnings.append(f"storage unreachable: {storage.error}")
    warnings += database_warnings(database.value)
    # binlog_format has had its own warning (database_warnings) since before these risks
    warnings += [r.warning() for r in risks or [] if r.at_risk and r.setting != "binlog_format"]
    return warnings


def build_status(
    info: DaemonInfo,
    database: ProbeState[DatabaseStatus],
    storage: ProbeState[None],
    storage_url: str,
    sections: dict[str, dict[str, Any]] | None = None,
    extra_warnings: list[str] | None = None,
    risks: list[SettingRisk] | None = None,
) -> dict[str, Any]:
    now = time.time()
    warnings = status_warnings(database, storage, extra_warnings, risks)
    db_doc: dict[str, Any] = database.to_dict()
    if database.value is not None:
        db_doc.update(database.value.to_dict())
        db_doc["setting_risks"] = [risk.to_dict() for risk in risks or []]
    document: dict[str, Any] = {
        "healthy": not warnings,
        "warnings": warnings,
        "daemon": {
            "version": __version__,
            "pid": os.getpid(),
            "started_at": info.started_at,
            "uptime_seconds": round(now - info.started_at, 3),
            "config_path": info.config_path,
            "config_loaded_at": info.config_loaded_at,
            "metrics_address": info.metrics_address or None,
        },
        "database": db_doc,
        "storage": {**storage.to_dict(), "url": storage_url},
    }
    document.update(sections or {})
    return document
