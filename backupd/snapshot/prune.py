"""Apply retention: delete the provider's snapshots first, then the manifest."""

from __future__ import annotations

from typing import Any

from backupd.binlog import retention
from backupd.config import RetentionSection
from backupd.errors import BackupdError
from backupd.log import get_logger
from backupd.snapshot.catalog import FAILED, Catalog
from backupd.snapshot.providers.base import SnapshotProvider
from backupd.snapshot.retention import plan_retention

_log = get_logger("snapshot")


def prune(
    catalog: Catalog,
    provider: SnapshotProvider,
    rules: RetentionSection,
    owner: str,
    dry_run: bool,
    now: float,
) -> dict[str, Any]:
    sets, broken = catalog.list()
    plan = plan_retention(sets, rules, owner)
    by_id = {s.set_id: s for s in sets}
    deleted: list[str] = []
    errors: list[str] = []
    for set_id in [] if dry_run else plan.delete:
        record = by_id[set_id]
        if record.volumes and record.provider != provider.name:
            errors.append(f"{set_id}: taken by the {record.provider} provider; left in place")
            continue
        try:
            if record.volumes or record.state == FAILED:  # late arrivals of a failed set too
                provider.delete(record)
            catalog.delete(set_id)
            deleted.append(set_id)
            _log.info("pruned snapshot set", set_id=set_id, state=record.state)
        except BackupdError as exc:
            errors.append(f"{set_id}: {exc.message}")
    gone = set(deleted if not dry_run else plan.delete)
    old_binlogs = retention.deletable(
        [s for s in sets if s.set_id not in gone], retention.archived_files(catalog.store)
    )
    if not dry_run:
        errors += retention.delete_files(catalog.store, old_binlogs)
    return {
        "dry_run": dry_run,
        "at": now,
        "keep": [{"set_id": k, "rules": v} for k, v in sorted(plan.keep.items())],
        "delete": plan.delete,
        "deleted": deleted,
        # archived binlog files older than every kept set's coordinate: go with the sets
        "binlog_files": [f"{f.server}/{f.file}" for f in old_binlogs],
        "errors": errors,
        "unreadable": broken,
    }
