"""Text renderings for people (backupctl's default output); JSON output never passes here."""

from __future__ import annotations

import time
from typing import Any


def ago(timestamp: float | None) -> str:
    if not timestamp:
        return "never"
    seconds = max(0.0, time.time() - float(timestamp))
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def _updown(section: dict[str, Any]) -> str:
    return "up" if section.get("up") else f"DOWN ({section.get('error')})"


def render_status(doc: dict[str, Any]) -> str:
    daemon, db, storage = doc["daemon"], doc["database"], doc["storage"]
    lines = [
        f"backupd {daemon['version']} pid {daemon['pid']}, up {daemon['uptime_seconds']:.0f}s"
        f" — {'healthy' if doc['healthy'] else 'UNHEALTHY'}",
        f"database: {_updown(db)}, checked {ago(db.get('checked_at'))}",
    ]
    if db.get("version"):
        binlog = (
            f"binlog {db['binlog_format']} at {db['coordinate']}"
            if db.get("binlog_enabled")
            else "binlog OFF"
        )
        lines.append(f"  {db['flavor']} {db['version']} (server_id {db['server_id']}), {binlog}")
        lines.append(f"  gtid position: {db.get('gtid_position') or '(empty)'}")
    lines.append(f"storage: {_updown(storage)} {storage['url']}")
    if storage.get("requests"):
        counts = ", ".join(f"{op} {n}" for op, n in storage["requests"].items())
        lines.append(f"  requests since start: {counts}")
    for name in ("snapshot", "binlog", "control", "restore_estimate"):
        if name in doc:
            lines.append(f"{name}: {doc[name].get('summary', '')}")
    for warning in doc.get("warnings", []):
        lines.append(f"warning: {warning}")
    return "\n".join(lines)
